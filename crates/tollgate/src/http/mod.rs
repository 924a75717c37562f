//! The HTTP surface: the router (every route and layer), pages, the JSON API, the webhook, health.

pub mod api;
pub mod error;
pub mod health;
pub mod pages;
pub mod router;
pub mod views;
pub mod webhook;
