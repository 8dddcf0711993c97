//! The status page (`/`, `/status.js`, `/status.css`), the JavaScript client (`/client.js`)
//! and `/info`, all embedded in the binary and served by the admin listener. No CDN.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::net::http;
use crate::shared::Shared;

/// The page.
pub const INDEX_HTML: &str = include_str!("page/index.html");
/// Its script (charts, tables, tickers).
pub const STATUS_JS: &str = include_str!("page/status.js");
/// Its style sheet.
pub const STATUS_CSS: &str = include_str!("page/status.css");
/// The JavaScript client, `clients/js/tickfan.js`.
pub const CLIENT_JS: &str = include_str!("../../clients/js/tickfan.js");

/// The embedded file at `path`, if any, as a complete response.
pub fn asset(path: &str) -> Option<Bytes> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/status.js" => (STATUS_JS, "text/javascript; charset=utf-8"),
        "/status.css" => (STATUS_CSS, "text/css; charset=utf-8"),
        "/client.js" => (CLIENT_JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    Some(http::response(
        200,
        content_type,
        body.as_bytes(),
        &[
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ],
    ))
}

/// `GET /info`: what the page needs to reach the public listener, and who this node is.
pub fn info(shared: &Shared, public: Option<SocketAddr>) -> Bytes {
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "publicPort": public.map(|a| a.port()),
        "wsPath": "/ws",
        "epoch": &*shared.epoch(),
        "workers": shared.stats.workers.len(),
    });
    http::response(
        200,
        "application/json",
        body.to_string().as_bytes(),
        &[("Cache-Control", "no-cache")],
    )
}
