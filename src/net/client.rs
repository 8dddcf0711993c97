//! Blocking WebSocket client connections (`ws://` and `wss://` with rustls), for the upstream
//! connectors and the `tickfan sub` / `tickfan pub` tools: TCP with a connect timeout, TLS,
//! the handshake, then a short read timeout so the caller's loop can run its timers.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use tungstenite::stream::MaybeTlsStream;
use tungstenite::WebSocket;

/// A client WebSocket over TCP or TLS.
pub type ClientSocket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects to `url` within `timeout` (each step), then sets the read timeout to `read_slice`.
pub fn connect(url: &str, timeout: Duration, read_slice: Duration) -> Result<ClientSocket, String> {
    let uri: tungstenite::http::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("url has no host")?;
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err("url must start with ws:// or wss://".into()),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addrs = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = String::from("no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let (ws, _) = tungstenite::client_tls_with_config(url, stream, None, None)
        .map_err(|e| format!("handshake: {e}"))?;
    set_read_timeout(&ws, read_slice)?;
    Ok(ws)
}

/// Changes the read timeout of the socket under `ws`.
pub fn set_read_timeout(ws: &ClientSocket, d: Duration) -> Result<(), String> {
    let tcp = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s,
        MaybeTlsStream::Rustls(s) => s.get_ref(),
        _ => return Err("unsupported stream".into()),
    };
    tcp.set_read_timeout(Some(d)).map_err(|e| e.to_string())
}

/// Whether a read error is only the read timeout.
pub fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}
