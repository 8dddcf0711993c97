//! Test helpers: a real server on port 0 and real WebSocket clients over TCP.
#![allow(dead_code)]

pub mod external;
pub mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tickfan::{Config, ConfigBuilder, ServerHandle};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// Starts a server with the test defaults (127.0.0.1:0, no feed) plus `key=value` overrides.
pub fn start(overrides: &[&str]) -> ServerHandle {
    let mut b = ConfigBuilder::new()
        .set("server.listen", "\"127.0.0.1:0\"")
        .unwrap()
        .set("server.ingest", "\"127.0.0.1:0\"")
        .unwrap()
        .set("server.admin", "\"127.0.0.1:0\"")
        .unwrap()
        .set("server.workers", "1")
        .unwrap()
        .set("feed.source", "\"none\"")
        .unwrap()
        .set("limits.messages_per_sec", "10000")
        .unwrap()
        .set("limits.message_burst", "10000")
        .unwrap();
    for o in overrides {
        b = b.set_pair(o).unwrap();
    }
    let config: Config = b.build().unwrap();
    ServerHandle::start(config).unwrap()
}

/// A server for the load tool: no per-IP connection limits (all its load comes from loopback),
/// and the tool's target for it, with `server_pid` for the CPU and memory figures.
pub fn start_for_load(server_pid: Option<u32>) -> (ServerHandle, tickfan::loadgen::Target) {
    let server = start(&[
        "limits.max_connections_per_ip=0",
        "limits.new_connections_per_ip_per_min=0",
    ]);
    let target = tickfan::loadgen::Target {
        public: server.public_addr().unwrap(),
        ingest: server.ingest_addr().unwrap(),
        server_pid,
    };
    (server, target)
}

/// A blocking WebSocket client with a read timeout.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

pub const TIMEOUT: Duration = Duration::from_secs(10);

fn connect_path(addr: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let url = format!("ws://{addr}{path}");
    let (ws, resp) = tungstenite::client::client(url.as_str(), stream).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

impl Client {
    /// Connects to `ws://{addr}{path}` (a node, or a proxy in front of nodes).
    pub fn at(addr: SocketAddr, path: &str) -> Client {
        Client {
            ws: connect_path(addr, path),
        }
    }

    /// Connects a subscriber to `/ws`.
    pub fn subscriber(server: &ServerHandle) -> Client {
        Client {
            ws: connect_path(server.public_addr().unwrap(), "/ws"),
        }
    }

    /// Connects a publisher to `/publish`.
    pub fn publisher(server: &ServerHandle) -> Client {
        Client {
            ws: connect_path(server.ingest_addr().unwrap(), "/publish"),
        }
    }

    /// Sends a JSON value as a text frame.
    pub fn send(&mut self, v: &Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    /// Sends raw text.
    pub fn send_text(&mut self, t: &str) {
        self.ws.send(Message::text(t.to_string())).unwrap();
    }

    /// Next JSON text message (skipping pings/pongs); panics on timeout or close.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Next message of the given type, skipping others (data, acks).
    pub fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the server's close frame, answers it (as every real client does, by
    /// reading on) until the connection ends; returns the close frame.
    pub fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(c)) => {
                    while self.ws.read().is_ok() {}
                    return c;
                }
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    }

    /// Subscribes and returns the `subscribed` reply.
    pub fn subscribe(
        &mut self,
        id: u64,
        exchange: &[&str],
        symbols: &[&str],
        types: &[&str],
    ) -> Value {
        let mut req = json!({"type":"subscribe","id":id});
        if !exchange.is_empty() {
            req["exchange"] = json!(exchange);
        }
        if !symbols.is_empty() {
            req["symbols"] = json!(symbols);
        }
        if !types.is_empty() {
            req["dataTypes"] = json!(types);
        }
        self.send(&req);
        let v = self.recv();
        assert_eq!(v["type"], "subscribed", "{v}");
        assert_eq!(v["id"], id);
        v
    }

    /// Round trip: a JSON ping answered by pong. Everything sent before is then processed.
    pub fn sync(&mut self) {
        self.send(&json!({"type":"ping","id":"sync"}));
        loop {
            let v = self.recv();
            if v["type"] == "pong" && v["id"] == "sync" {
                return;
            }
        }
    }

    /// Asserts no text message arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.ws.get_mut().set_read_timeout(Some(wait)).unwrap();
        match self.ws.read() {
            Ok(Message::Text(t)) => panic!("unexpected message {t}"),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
        self.ws.get_mut().set_read_timeout(Some(TIMEOUT)).unwrap();
    }
}

/// A publisher message.
pub fn msg(exchange: &str, symbol: &str, data_type: &str, data: Value) -> Value {
    json!({"exchange":exchange,"symbol":symbol,"dataType":data_type,"data":data})
}

/// Waits until `cond` holds (polling the server's counters), or panics after 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a raw HTTP request and returns the whole response text (the server closes).
pub fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an HTTP response.
pub fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Performs the WebSocket upgrade by hand on a raw socket (for hostile frames, or a client that
/// never answers anything).
pub fn raw_ws(addr: SocketAddr) -> TcpStream {
    raw_ws_on(TcpStream::connect(addr).unwrap())
}

/// A TCP connection whose receive buffer is `bytes` (the kernel may round it up): a client
/// that reads slowly, or not at all, fills up fast.
pub fn small_buffer_stream(addr: SocketAddr, bytes: usize) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// A subscriber over a small-receive-buffer socket (see [`small_buffer_stream`]).
pub fn slow_subscriber(server: &ServerHandle, rcvbuf: usize) -> Client {
    let addr = server.public_addr().unwrap();
    let stream = small_buffer_stream(addr, rcvbuf);
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (ws, _) = tungstenite::client::client(format!("ws://{addr}/ws").as_str(), stream).unwrap();
    Client { ws }
}

/// Performs the upgrade by hand on an already connected socket.
pub fn raw_ws_on(mut s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}
