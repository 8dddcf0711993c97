//! Scale-out with the real programs: redis-server, two tickfan nodes (the binary) sharing one
//! feed through Redis, and nginx in front (deploy/nginx.conf). The packages are installed by
//! tests/tools/ensure-packages.sh when missing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::external::{ensure_packages, Nginx, Node, Redis};
use common::{http, msg, wait_until, Client};
use serde_json::{json, Value};

const STREAM: &str = "binance:BTCUSDT:trade";

fn needs() {
    ensure_packages(&[("redis-server", "redis-server"), ("nginx", "nginx")]);
}

fn subscribe(c: &mut Client, resume: Option<(&str, u64)>) -> Value {
    let mut req = json!({"type":"subscribe","id":1,"exchange":["binance"],"symbols":["BTCUSDT"],"dataTypes":["trade"]});
    if let Some((epoch, seq)) = resume {
        req["resume"] = json!({"epoch": epoch, "streams": {STREAM: seq}});
    }
    c.send(&req);
    c.recv_type("subscribed")
}

fn publish(p: &mut Client, range: std::ops::RangeInclusive<u64>) {
    let batch: Vec<Value> = range
        .map(|i| msg("binance", "BTCUSDT", "trade", json!({"i": i})))
        .collect();
    p.send(&Value::Array(batch));
}

/// Reads data messages until `last` arrives: (seq, i) pairs.
fn read_until(c: &mut Client, last: u64) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    loop {
        let v = c.recv();
        if v["type"] != "data" {
            continue;
        }
        let i = v["data"]["i"].as_u64().unwrap();
        got.push((v["seq"].as_u64().unwrap(), i));
        if i == last {
            return got;
        }
    }
}

#[test]
fn two_nodes_behind_nginx_serve_one_feed_with_identical_seqs_and_resume_after_a_node_dies() {
    needs();
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let b = Node::start(&redis.url(), &[]);
    let nginx = Nginx::start(&[a.public, b.public]);
    let mut nodes = HashMap::from([(0, a), (1, b)]);

    // least_conn spreads the two clients over the two nodes; find out which is where.
    let mut c1 = Client::at(nginx.addr(), "/ws");
    let s1 = subscribe(&mut c1, None);
    wait_until("c1 on a node", || {
        nodes.values().map(Node::active).sum::<u64>() == 1
    });
    let home1 = *nodes.iter().find(|(_, n)| n.active() == 1).unwrap().0;
    let mut c2 = Client::at(nginx.addr(), "/ws");
    let s2 = subscribe(&mut c2, None);
    wait_until("c2 on the other node", || {
        nodes.values().all(|n| n.active() == 1)
    });
    let epoch = s1["epoch"].as_str().unwrap().to_string();
    assert_eq!(s2["epoch"], s1["epoch"], "one epoch on every node");

    // A publisher on the other node; both clients see every message with the same seq.
    let survivor = 1 - home1;
    let mut p = nodes[&survivor].publisher();
    publish(&mut p, 1..=50);
    let got1 = read_until(&mut c1, 50);
    let got2 = read_until(&mut c2, 50);
    assert_eq!(got1.len(), 50);
    assert_eq!(got1, got2, "identical seqs on both nodes");
    let first = got1[0].0;
    assert!(got1
        .iter()
        .enumerate()
        .all(|(k, &(seq, i))| seq == first + k as u64 && i == k as u64 + 1));
    let last_seen = got1.last().unwrap().0;

    // c1's node dies; messages keep coming while c1 is away.
    let mut dead = nodes.remove(&home1).unwrap();
    dead.run.signal("-TERM");
    let close = c1.recv_close();
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1001));
    assert!(dead.run.wait_exit(Duration::from_secs(10)).is_some());
    publish(&mut p, 51..=80);
    let _ = read_until(&mut c2, 80);

    // c1 reconnects through nginx (only the survivor is left) and resumes with no gap.
    let mut c1 = Client::at(nginx.addr(), "/ws");
    let r = subscribe(&mut c1, Some((&epoch, last_seen)));
    assert_eq!(r["epoch"], epoch.as_str());
    assert_eq!(r["recovered"], true, "{r}");
    publish(&mut p, 81..=100);
    let got = read_until(&mut c1, 100);
    let want: Vec<(u64, u64)> = (51..=100).map(|i| (first + i - 1, i)).collect();
    assert_eq!(
        got, want,
        "resumed on the other node without a gap or a duplicate"
    );
    assert_eq!(nodes[&survivor].active(), 2);
    let bus = &nodes[&survivor].get("/health")["bus"];
    assert_eq!(bus["state"], "up", "{bus}");
    assert_eq!(bus["gapMessages"], 0);
    drop(nginx);
}

#[test]
fn losing_redis_is_counted_reported_and_recovered_with_a_new_epoch() {
    needs();
    let mut redis = Redis::start();
    let node = Node::start(&redis.url(), &[]);
    let mut c = Client::at(node.public, "/ws");
    let s = subscribe(&mut c, None);
    let old_epoch = s["epoch"].as_str().unwrap().to_string();
    let mut p = node.publisher();
    publish(&mut p, 1..=10);
    let got = read_until(&mut c, 10);
    assert_eq!(got.last().unwrap().0, 10);
    let h = node.get("/health");
    assert_eq!(
        (h["status"].as_str(), h["bus"]["state"].as_str()),
        (Some("healthy"), Some("up")),
        "{h}"
    );

    // Redis dies: the node says so, and publishes are refused (counted), not lost silently.
    redis.stop();
    wait_until("bus down in /health", || {
        node.get("/health")["bus"]["state"] == "down"
    });
    let h = node.get("/health");
    assert_eq!(h["status"], "degraded", "{h}");
    wait_until("publish refused", || {
        p.send(&msg("binance", "BTCUSDT", "trade", json!({"i": 0})));
        // An accepted message gets no reply: read briefly.
        p.ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let refused = match p.ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                v["type"] == "error" && v["code"] == "UNAVAILABLE"
            }
            _ => false,
        };
        p.ws.get_mut()
            .set_read_timeout(Some(common::TIMEOUT))
            .unwrap();
        refused
    });
    assert!(node.get("/health")["bus"]["lostBusDown"].as_u64().unwrap() >= 1);

    // A new, empty Redis: the node reconnects, a new epoch begins, subscribers are told with
    // 1012, and a resume from the old epoch says why it cannot be honoured.
    redis.restart();
    let close = c.recv_close();
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1012));
    wait_until("bus up again", || {
        let h = node.get("/health");
        h["bus"]["state"] == "up" && h["bus"]["writer"] == "up"
    });
    let mut c = Client::at(node.public, "/ws");
    let r = subscribe(&mut c, Some((&old_epoch, 10)));
    assert_ne!(r["epoch"], old_epoch.as_str());
    assert_eq!(r["recovered"], false);
    assert!(
        r["notRecovered"][STREAM]
            .as_str()
            .unwrap()
            .contains("epoch"),
        "{r}"
    );
    p.send(&msg("binance", "BTCUSDT", "trade", json!({"i": 11})));
    let got = read_until(&mut c, 11);
    assert_eq!(got.last().unwrap().0, 1, "seqs restart in the new epoch");
    let bus = &node.get("/health")["bus"];
    assert!(bus["reconnects"].as_u64().unwrap() >= 1, "{bus}");
    assert_eq!(bus["epochChanges"], 1, "{bus}");
    let metrics = http(
        node.admin,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(metrics.contains("tickfan_bus_lost_total{reason=\"bus_down\"}"));
    assert!(metrics.contains("tickfan_connections_closed_total{reason=\"restart\"} 1"));
}

/// Sends one inline command to Redis and returns the first line of the reply.
fn redis_cmd(port: u16, cmd: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_string()
}

#[test]
fn an_edge_cut_off_from_the_bus_counts_the_gap_and_tells_its_subscribers() {
    needs();
    let redis = Redis::start();
    let edge = Node::start(
        &redis.url(),
        &[
            "--set",
            "bus.role=\"edge\"",
            "--set",
            "bus.reconnect_min_ms=1000",
            "--set",
            "bus.reconnect_max_ms=1000",
        ],
    );
    let ingest = Node::start(&redis.url(), &["--set", "bus.role=\"ingest\""]);

    // An edge takes no publishes: the publisher is told where to go.
    let mut wrong = edge.publisher();
    wrong.send(&msg("binance", "BTCUSDT", "trade", json!({"i": 0})));
    let v = wrong.recv_type("error");
    assert_eq!(v["code"], "UNAVAILABLE", "{v}");

    let mut c = Client::at(edge.public, "/ws");
    let s = subscribe(&mut c, None);
    let epoch = s["epoch"].as_str().unwrap().to_string();
    let mut p = ingest.publisher();
    publish(&mut p, 1..=10);
    assert_eq!(read_until(&mut c, 10).last().unwrap().0, 10);

    // The edge's subscription is cut; what is published before it is back never reaches it.
    let killed = redis_cmd(redis.port, "CLIENT KILL TYPE pubsub");
    assert_eq!(killed, ":1", "one subscriber connection (the edge's)");
    publish(&mut p, 11..=15);
    wait_until("the edge is back", || {
        let h = edge.get("/health");
        h["bus"]["reconnects"] == 1 && h["bus"]["reader"] == "up"
    });
    publish(&mut p, 16..=16);
    let mut notices = Vec::new();
    let first_after = loop {
        let v = c.recv();
        match v["type"].as_str() {
            Some("dropped") => notices.push(v),
            Some("data") => break v,
            _ => {}
        }
    };
    assert_eq!(first_after["seq"], 16);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(
        (notices[0]["count"].as_u64(), notices[0]["reason"].as_str()),
        (Some(5), Some("bus_gap"))
    );
    assert_eq!(edge.get("/health")["bus"]["gapMessages"], 5);
    let metrics = http(
        edge.admin,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("tickfan_bus_lost_total{reason=\"gap\"} 5"),
        "{metrics}"
    );

    // A resume across the hole is refused with the reason (a snapshot is the way back).
    let mut late = Client::at(edge.public, "/ws");
    let r = subscribe(&mut late, Some((&epoch, 10)));
    assert_eq!(r["recovered"], false, "{r}");
    assert!(
        r["notRecovered"][STREAM]
            .as_str()
            .unwrap()
            .contains("missed"),
        "{r}"
    );
    let mut fine = Client::at(edge.public, "/ws");
    let r = subscribe(&mut fine, Some((&epoch, 16)));
    assert_eq!(r["recovered"], true, "{r}");
}

#[test]
fn deploy_nginx_conf_passes_nginx_t() {
    needs();
    let dir = common::external::TempDir::new("nginx-t");
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf");
    let out = std::process::Command::new(common::external::program("nginx"))
        .arg("-t")
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&conf)
        .args(["-e", "stderr", "-g"])
        .arg(format!("pid {}/nginx.pid;", dir.0.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("syntax is ok"), "{text}");
}
