//! Who is signed in: the provider interface (local accounts now, Clerk later) and the built-in
//! accounts. The extractors that ask a provider (`http::extract`) sit above this module.

pub mod local;
pub mod throttle;

use std::future::Future;
use std::pin::Pin;

use axum::http::request::Parts;

use crate::domain::User;
use crate::kv::KvError;

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<User>, KvError>> + Send + 'a>>;

/// A way of knowing who sent a request. Handlers never see which one is configured.
pub trait AuthProvider: Send + Sync {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a>;
}

/// Reads one cookie from the request headers.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
