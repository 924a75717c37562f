//! Static assets: the stylesheet and the script of the Clerk pages, compiled into the binary and
//! served under URLs that change with their content, so browsers may cache them for a year.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};

const STYLESHEET: &str = include_str!("../../static/style.css");
const CLERK_SCRIPT: &str = include_str!("../../static/clerk.js");

fn versioned(path: &str, content: &str) -> String {
    format!("{path}?v={}", &hex::encode(Sha256::digest(content.as_bytes()))[..12])
}

static STYLESHEET_URL: LazyLock<String> = LazyLock::new(|| versioned("/assets/style.css", STYLESHEET));
static CLERK_SCRIPT_URL: LazyLock<String> = LazyLock::new(|| versioned("/assets/clerk.js", CLERK_SCRIPT));

/// Where pages link the stylesheet (with its content version).
pub(crate) fn stylesheet_url() -> &'static str {
    &STYLESHEET_URL
}

pub(crate) fn clerk_script_url() -> &'static str {
    &CLERK_SCRIPT_URL
}

const FOREVER: (header::HeaderName, &str) = (header::CACHE_CONTROL, "public, max-age=31536000, immutable");

pub(crate) async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), FOREVER], STYLESHEET)
}

pub(crate) async fn clerk_script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), FOREVER], CLERK_SCRIPT)
}
