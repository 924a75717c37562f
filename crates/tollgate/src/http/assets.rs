//! Static assets: the stylesheet, compiled into the binary and served under a URL that changes
//! with its content, so browsers may cache it for a year.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};

const STYLESHEET: &str = include_str!("../../static/style.css");

static STYLESHEET_URL: LazyLock<String> =
    LazyLock::new(|| format!("/assets/style.css?v={}", &hex::encode(Sha256::digest(STYLESHEET.as_bytes()))[..12]));

/// Where pages link the stylesheet (with its content version).
pub fn stylesheet_url() -> &'static str {
    &STYLESHEET_URL
}

pub async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], STYLESHEET)
}
