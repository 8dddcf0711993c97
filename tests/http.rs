//! Plain HTTP on the listeners: health, 404, non-upgrade requests, malformed heads.

mod common;

use common::{http, start, status};

#[test]
fn public_listener_http_answers() {
    let server = start(&[]);
    let addr = server.public_addr().unwrap();
    let health = http(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&health), 200, "{health}");
    let body = health.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["status"], "healthy");
    assert!(v["connections"].is_u64() && v["uptime"].is_u64());

    assert_eq!(
        status(&http(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")),
        404
    );
    let plain_ws = http(addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&plain_ws), 426, "{plain_ws}");
    assert!(plain_ws.contains("Upgrade: websocket"));
    assert_eq!(
        status(&http(
            addr,
            "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )),
        405
    );
    assert_eq!(status(&http(addr, "\x16\x03\x01 garbage\r\n\r\n")), 400);
    let version = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 8\r\n\r\n";
    assert_eq!(status(&http(addr, version)), 426);
    let huge = format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(status(&http(addr, &huge)), 431);
    // Every one of those was counted and closed.
    common::wait_until("connections closed", || server.stats().open_sockets == 0);
    assert_eq!(server.stats().workers[0].total_connections, 7);
}

#[test]
fn ingest_and_admin_listeners_route_their_paths() {
    let server = start(&[]);
    let ingest = server.ingest_addr().unwrap();
    assert_eq!(
        status(&http(ingest, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")),
        404
    );
    assert_eq!(
        status(&http(ingest, "GET /publish HTTP/1.1\r\nHost: x\r\n\r\n")),
        426
    );
    let admin = server.admin_addr().unwrap();
    let stats = http(admin, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&stats), 200);
    let v: serde_json::Value =
        serde_json::from_str(stats.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    for key in [
        "totalConnections",
        "activeConnections",
        "totalSubscriptions",
        "averageConnectionDuration",
        "messagesForwarded",
        "errorsEncountered",
        "lastActivity",
        "workers",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(
        status(&http(admin, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")),
        200
    );
    assert_eq!(
        status(&http(admin, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")),
        404
    );
}
