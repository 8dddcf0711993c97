// clients/js/tickfan.js in Node.js against a real tickfan (the binary in TICKFAN_BIN), run by
// tests/clients.rs: `node [--experimental-websocket] --test tests/js/client.test.js`.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const net = require("node:net");
const path = require("node:path");
const { spawn } = require("node:child_process");
const { TickfanClient, backoffDelay, filterMatches, DEFAULTS } = require(path.join(__dirname, "../../clients/js/tickfan.js"));

const BIN = process.env.TICKFAN_BIN;
const servers = new Set();
process.on("exit", () => servers.forEach((s) => s.kill("SIGKILL")));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

const { sleep, waitFor } = require("./helpers.js");

/** Starts tickfan on the given ports and waits until it logs its admin address. */
function startServer(ports, extra = []) {
  const args = [
    "--listen", `127.0.0.1:${ports.pub}`, "--ingest", `127.0.0.1:${ports.ingest}`,
    "--admin", `127.0.0.1:${ports.admin}`, "--workers", "1", "--feed", "none", "--log-level", "info",
    ...extra,
  ];
  const child = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
  servers.add(child);
  child.on("exit", () => servers.delete(child));
  return new Promise((resolve, reject) => {
    let seen = "";
    child.stderr.on("data", (d) => {
      seen += d;
      if (seen.includes("admin on http://")) resolve(child);
    });
    child.on("exit", (code) => reject(new Error("tickfan exited " + code + ": " + seen)));
  });
}

async function stopServer(child) {
  const gone = new Promise((r) => child.on("exit", r));
  child.kill("SIGTERM");
  await gone;
}

async function ports() {
  return { pub: await freePort(), ingest: await freePort(), admin: await freePort() };
}

async function adminStats(p) {
  const r = await fetch(`http://127.0.0.1:${p.admin}/stats`);
  return r.json();
}

/** A publisher sending trade i on binance:BTCUSDT:trade every `everyMs`. */
function startPublisher(p, everyMs) {
  const ws = new WebSocket(`ws://127.0.0.1:${p.ingest}/publish`);
  let i = 0;
  let timer = null;
  ws.onopen = () => {
    timer = setInterval(() => {
      i += 1;
      ws.send(JSON.stringify({ exchange: "binance", symbol: "BTCUSDT", dataType: "trade", data: { i } }));
    }, everyMs);
  };
  return {
    stop() {
      clearInterval(timer);
      ws.close();
    },
    get sent() {
      return i;
    },
  };
}

test("backoff doubles from 1 s to 30 s with +/-30% jitter, and filters match stream keys", () => {
  const opts = DEFAULTS;
  assert.strictEqual(backoffDelay(0, opts, () => 0.5), 1000);
  assert.strictEqual(backoffDelay(1, opts, () => 0.5), 2000);
  assert.strictEqual(backoffDelay(10, opts, () => 0.5), 30000);
  assert.strictEqual(backoffDelay(0, opts, () => 0), 700);
  assert.strictEqual(backoffDelay(0, opts, () => 1), 1300);
  assert.ok(filterMatches({ exchange: ["binance"], symbols: null, dataTypes: ["*"] }, "binance:BTCUSDT:trade"));
  assert.ok(!filterMatches({ exchange: ["kraken"] }, "binance:BTCUSDT:trade"));
});

test("concurrent connect() calls open exactly one connection", async () => {
  const p = await ports();
  const server = await startServer(p);
  try {
    const client = new TickfanClient(`ws://127.0.0.1:${p.pub}/ws`);
    const states = [];
    client.on("state", (s) => states.push(s));
    const calls = [];
    for (let k = 0; k < 10; k++) calls.push(client.connect());
    await sleep(0);
    for (let k = 0; k < 10; k++) calls.push(client.connect());
    const results = await Promise.all(calls);
    assert.ok(results.every((r) => r === client));
    await client.connect(); // already connected: no new socket
    await sleep(300);
    const s = await adminStats(p);
    assert.strictEqual(s.activeConnections, 1, "one WebSocket on the server");
    assert.strictEqual(s.totalConnections, 1, "one TCP connection ever");
    assert.deepStrictEqual(states, ["connecting", "connected"]);
    client.close();
    assert.strictEqual(client.state, "disconnected");
  } finally {
    await stopServer(server);
  }
});

test("resumes with no gap and no duplicate after the gateway closes the connection", async () => {
  const p = await ports();
  // The gateway ends every connection after about 1.5 s (1001): the client must reconnect and
  // resume from its last seq each time while the publisher keeps going.
  const server = await startServer(p, ["--set", "limits.max_lifetime_ms=1500", "--set", "history.size=1000"]);
  try {
    const seqs = [];
    const gaps = [];
    const client = new TickfanClient(`ws://127.0.0.1:${p.pub}/ws`, {
      reconnectMinMs: 200,
      reconnectMaxMs: 400,
      onData: (m) => seqs.push(m.seq),
      onGap: (g) => gaps.push(g),
    });
    client.subscribe({ exchange: ["binance"], symbols: ["BTCUSDT"], dataTypes: ["trade"] });
    await client.connect();
    const pub = startPublisher(p, 10);
    await waitFor("two reconnects", () => client.stats().reconnects >= 2, 15000);
    await sleep(300);
    pub.stop();
    const sent = pub.sent;
    await waitFor("every message", () => seqs.length > 0 && seqs[seqs.length - 1] >= sent, 5000);
    const first = seqs[0];
    assert.deepStrictEqual(seqs, Array.from({ length: seqs.length }, (_, k) => first + k), "contiguous seqs");
    assert.deepStrictEqual(gaps, []);
    const st = client.stats();
    assert.strictEqual(st.gaps, 0);
    assert.strictEqual(st.duplicates, 0);
    assert.ok(st.reconnects >= 2);
    assert.ok(st.availability > 0.5 && st.availability <= 1, "availability " + st.availability);
    assert.ok(st.downtimeMs > 0);
    client.close();
  } finally {
    await stopServer(server);
  }
});

test("reconnects after the gateway restarts and reports the new epoch", async () => {
  const p = await ports();
  let server = await startServer(p, ["--set", "history.size=100"]);
  const states = [];
  const epochs = [];
  const gaps = [];
  const got = [];
  const client = new TickfanClient(`ws://127.0.0.1:${p.pub}/ws`, {
    reconnectMinMs: 200,
    reconnectMaxMs: 400,
    onStateChange: (s) => states.push(s),
    onEpoch: (e, old) => epochs.push([old, e]),
    onGap: (g) => gaps.push(g),
    onData: (m) => got.push(m.data.i),
  });
  try {
    client.subscribe({ exchange: ["binance"] });
    await client.connect();
    let pub = startPublisher(p, 20);
    await waitFor("data", () => got.length >= 5);
    pub.stop();
    await stopServer(server);
    await waitFor("reconnecting", () => client.state === "reconnecting");
    server = await startServer(p, ["--set", "history.size=100"]);
    await waitFor("connected again", () => client.state === "connected", 10000);
    const before = got.length;
    pub = startPublisher(p, 20);
    await waitFor("data after the restart", () => got.length >= before + 5);
    pub.stop();
    assert.ok(client.stats().reconnects >= 1);
    assert.strictEqual(epochs.length, 1, "a new epoch after the restart");
    assert.ok(gaps.some((g) => /epoch changed/.test(g.reason || "")), JSON.stringify(gaps));
    assert.deepStrictEqual(states.slice(0, 3), ["connecting", "connected", "reconnecting"]);
    assert.strictEqual(states[states.length - 1], "connected");
    client.close();
  } finally {
    client.close();
    await stopServer(server);
  }
});

test("a silent gateway is detected by the heartbeat and replaced", async () => {
  // A TCP server that completes the WebSocket handshake and then never answers.
  const sockets = [];
  const silent = net.createServer((sock) => {
    sockets.push(sock);
    let head = "";
    sock.on("data", (chunk) => {
      if (head.includes("\r\n\r\n")) return; // after the handshake: read and ignore
      head += chunk;
      if (!head.includes("\r\n\r\n")) return;
      const key = /Sec-WebSocket-Key: (.*)\r\n/i.exec(head)[1].trim();
      const accept = require("node:crypto").createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    });
  });
  await new Promise((r) => silent.listen(0, "127.0.0.1", r));
  const { port } = silent.address();
  const client = new TickfanClient(`ws://127.0.0.1:${port}/ws`, {
    heartbeatIntervalMs: 200,
    heartbeatTimeoutMs: 300,
    reconnectMinMs: 100,
    reconnectMaxMs: 200,
  });
  try {
    await client.connect();
    await waitFor("a heartbeat timeout and a new connection", () => client.stats().heartbeatTimeouts >= 1 && client.stats().reconnects >= 1, 5000);
    assert.ok(sockets.length >= 2);
  } finally {
    client.close();
    sockets.forEach((s) => s.destroy());
    silent.close();
  }
});
