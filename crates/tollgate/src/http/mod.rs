//! The HTTP surface: the router (every route and layer), pages, the JSON API, the webhook, health,
//! the extractors and middleware, the templates' view models, and static assets.

pub(crate) mod accounts;
pub(crate) mod api;
pub(crate) mod assets;
pub(crate) mod clerk_handshake;
pub(crate) mod clerk_webhook;
pub(crate) mod csrf;
pub(crate) mod deadline;
pub(crate) mod edge;
pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod gateway;
pub(crate) mod headers;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod lane;
pub(crate) mod orgs;
pub(crate) mod outer;
pub(crate) mod pages;
pub(crate) mod router;
pub(crate) mod serve;
pub(crate) mod trace;
pub(crate) mod views;
pub(crate) mod webhook;
