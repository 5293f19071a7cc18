//! `GET /`: the dashboard, one self-contained page (inline CSS and JS, no build chain)
//! embedded in the binary. The page itself needs no token; it asks for one, keeps it in
//! the tab's session storage and sends it as the bearer header on every API call, the
//! event stream included (read with `fetch()`, since `EventSource` cannot send headers).
//!
//! The page is served with a strict Content-Security-Policy: only its own inline script
//! and style (by SHA-256) run, and it may only talk to this server.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("dashboard.html");

/// The CSP hash source of the text between `open` and `close` in the page.
fn hash_of(open: &str, close: &str) -> String {
    let inline = PAGE
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inline, _)| inline);
    let digest = Sha256::digest(inline.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash_of("<script>", "</script>"),
            hash_of("<style>", "</style>"),
        )
    })
}

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, policy()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
        .into_response()
}
