//! Who is signed in: a provider interface (local accounts now, Clerk later), the `CurrentUser`
//! extractor every handler uses, and cross-site request protection for form posts.

pub mod csrf;
pub mod local;

use std::future::Future;
use std::pin::Pin;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;

use crate::domain::{Email, UserId};
use crate::http::error::{Failure, Surface};
use crate::kv::KvError;
use crate::state::AppState;

/// A signed-in user, as every provider reports one.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
}

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

/// The signed-in user. Without one, an API call gets 401 JSON and a page visit goes to `/auth`.
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        match state.auth.authenticate(parts).await {
            Ok(Some(user)) => Ok(CurrentUser(user)),
            // After signing in, come back to the page asked for; a form post cannot be replayed, so
            // it comes back to the pricing page instead.
            Ok(None) => {
                let back_to =
                    if parts.method == axum::http::Method::GET { parts.uri.path_and_query().map_or("/", |p| p.as_str()) } else { "/" };
                Err(Failure::signed_out(Surface::of(parts), back_to))
            }
            Err(e) => Err(Failure::from_kv(Surface::of(parts), e)),
        }
    }
}

impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Failure> {
        match state.auth.authenticate(parts).await {
            Ok(user) => Ok(user.map(CurrentUser)),
            Err(e) => Err(Failure::from_kv(Surface::of(parts), e)),
        }
    }
}
