//! Black-box tests: the real Tollgate on a free port, with the real Stripe emulator over HTTP and
//! real KV backends (redb in a temp dir, a real redis-server where Redis is under test).

mod accounts;
mod checkout;
mod clerk;
mod clerk_mock;
mod clerk_oracle;
mod cli;
mod doctor;
mod entitlement;
mod flow;
mod gate;
mod gateway;
mod helpers;
mod hostile;
mod instances;
mod keys;
mod kv;
mod layers;
mod lifecycle;
mod malformed;
mod manage;
mod nginx;
mod ordering;
mod orgs;
mod pages;
mod recipe;
mod redis;
mod redis_server;
mod stripe_manners;
mod tunnels;
mod webhooks;
