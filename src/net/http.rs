//! Plain HTTP/1.1 request heads (before a WebSocket upgrade) and plain HTTP responses.

use bytes::Bytes;

/// Most headers a request head may carry.
const MAX_HEADERS: usize = 48;

/// The parts of a request head the gateway uses.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: Option<String>,
    /// Whether this asks for a WebSocket upgrade (`Upgrade: websocket`, `Connection: upgrade`).
    pub is_upgrade: bool,
    /// `Sec-WebSocket-Key`.
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// Length of the head in bytes (what follows belongs to the WebSocket stream).
    pub head_len: usize,
}

/// Why a request head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or malformed.
    Malformed,
    /// Larger than the configured maximum (431).
    TooLarge,
}

/// Parses a request head from `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(buf).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        _ => HeadError::Malformed,
    })?;
    let head_len = match status {
        httparse::Status::Partial => {
            return if buf.len() >= max_len {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        httparse::Status::Complete(n) if n > max_len => return Err(HeadError::TooLarge),
        httparse::Status::Complete(n) => n,
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut head = RequestHead {
        method: req.method.unwrap_or("").to_string(),
        path,
        query,
        head_len,
        ..RequestHead::default()
    };
    let (mut upgrade_ws, mut connection_upgrade) = (false, false);
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value);
        }
    }
    head.is_upgrade = upgrade_ws && connection_upgrade;
    Ok(Some(head))
}

/// A plain HTTP response that closes the connection.
pub fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, &str)],
) -> Bytes {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(b"Connection: close\r\nCache-Control: no-store\r\n");
    for (k, v) in extra_headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// A plain-text error response whose body is `message` and a newline.
pub fn error_response(status: u16, message: &str) -> Bytes {
    let body = format!("{message}\n");
    let extra: &[(&str, &str)] = match status {
        426 => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        _ => &[],
    };
    response(status, "text/plain; charset=utf-8", body.as_bytes(), extra)
}

/// The `101 Switching Protocols` response for a WebSocket key.
pub fn upgrade_response(ws_key: &str) -> Bytes {
    let accept = tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    Bytes::from(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ))
}

/// Checks an upgrade request: `Err((status, message))` when it cannot be upgraded.
pub fn check_upgrade(head: &RequestHead) -> Result<&str, (u16, &'static str)> {
    if head.method != "GET" {
        return Err((405, "method not allowed"));
    }
    if !head.is_upgrade {
        return Err((
            426,
            "this endpoint speaks WebSocket: send an upgrade request",
        ));
    }
    if head.ws_version.as_deref() != Some("13") {
        return Err((426, "unsupported Sec-WebSocket-Version (13 is supported)"));
    }
    match head.ws_key.as_deref() {
        Some(k) if !k.is_empty() => Ok(k),
        _ => Err((400, "missing Sec-WebSocket-Key")),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws?token=x HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\nrest";

    #[test]
    fn parses_upgrade_and_leaves_the_rest() {
        let h = parse_head(UPGRADE, 8192).unwrap().unwrap();
        assert_eq!(
            (h.path.as_str(), h.query.as_deref()),
            ("/ws", Some("token=x"))
        );
        assert!(h.is_upgrade);
        assert_eq!(&UPGRADE[h.head_len..], b"rest");
        assert_eq!(check_upgrade(&h), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
        let r = upgrade_response("dGhlIHNhbXBsZSBub25jZQ==");
        assert!(std::str::from_utf8(&r)
            .unwrap()
            .contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn partial_malformed_and_too_large() {
        assert!(parse_head(b"GET /ws HTTP/1.1\r\nHost:", 8192)
            .unwrap()
            .is_none());
        assert_eq!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n", 8192).unwrap_err(),
            HeadError::Malformed
        );
        let big = vec![b'a'; 600];
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend_from_slice(&big);
        assert_eq!(parse_head(&req, 512).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn plain_get_is_not_an_upgrade() {
        let h = parse_head(b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        assert_eq!(check_upgrade(&h).unwrap_err().0, 426);
    }
}
