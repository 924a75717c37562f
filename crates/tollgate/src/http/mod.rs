//! The HTTP surface: the router (every route and layer), pages, the JSON API, the webhook, health,
//! the extractors and middleware, the templates' view models, and static assets.

pub mod accounts;
pub mod api;
pub mod assets;
pub mod clerk_handshake;
pub mod clerk_webhook;
pub mod csrf;
pub mod deadline;
pub mod edge;
pub mod error;
pub mod extract;
pub mod format;
pub mod gateway;
pub mod headers;
pub mod health;
pub mod pages;
pub mod router;
pub mod serve;
pub mod trace;
pub mod views;
pub mod webhook;
