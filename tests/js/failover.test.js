// clients/js/tickfan.js through nginx in front of two tickfan nodes sharing one feed through
// Redis (started by tests/clients.rs, described in FAILOVER_JSON). The node holding the client
// is stopped while a publisher on the other node keeps going: the client must reconnect through
// nginx to the other node and resume with no gap and no duplicate, in the same epoch.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const path = require("node:path");
const { TickfanClient } = require(path.join(__dirname, "../../clients/js/tickfan.js"));

const setup = JSON.parse(process.env.FAILOVER_JSON || "{}");
const { waitFor } = require("./helpers.js");

async function stats(node) {
  try {
    const r = await fetch(node.admin + "/stats");
    return await r.json();
  } catch (e) {
    return null; // stopped
  }
}

async function active(node) {
  const s = await stats(node);
  return s ? s.activeConnections : -1;
}

test("the client fails over to the other node and resumes without a gap", async () => {
  const seqs = [];
  const items = [];
  const gaps = [];
  const epochs = [];
  const client = new TickfanClient(setup.ws, {
    reconnectMinMs: 200,
    reconnectMaxMs: 400,
    onData: (m) => {
      seqs.push(m.seq);
      items.push(m.data.i);
    },
    onGap: (g) => gaps.push(g),
    onEpoch: (e, old) => epochs.push([old, e]),
  });
  client.subscribe({ exchange: ["binance"], symbols: ["BTCUSDT"], dataTypes: ["trade"] });
  let pub = null;
  try {
    await client.connect();
    let home = -1;
    // Connected and subscribed: the node counts the filter once it has taken the request, and
    // the first message published after that is the first the client must get.
    await waitFor("the client subscribed on a node", async () => {
      const all = await Promise.all(setup.nodes.map(stats));
      home = all.findIndex((s) => s && s.activeConnections === 1 && s.totalSubscriptions === 1);
      return home >= 0 && all.reduce((n, s) => n + (s ? s.activeConnections : 0), 0) === 1;
    });
    const other = setup.nodes[1 - home];

    // A publisher on the other node: trade i every 10 ms.
    pub = new WebSocket(other.ingest);
    await new Promise((resolve, reject) => {
      pub.onopen = resolve;
      pub.onerror = reject;
    });
    let sent = 0;
    const timer = setInterval(() => {
      sent += 1;
      pub.send(JSON.stringify({ exchange: "binance", symbol: "BTCUSDT", dataType: "trade", data: { i: sent } }));
    }, 10);
    try {
      await waitFor("50 messages", () => items.length >= 50);
      process.kill(setup.nodes[home].pid, "SIGTERM");
      await waitFor("a reconnect", () => client.stats().reconnects >= 1, 15000);
      const at = items.length;
      await waitFor("50 more messages", () => items.length >= at + 50, 15000);
    } finally {
      clearInterval(timer);
    }
    await waitFor("every message", () => items.length > 0 && items[items.length - 1] === sent, 10000);
    assert.deepStrictEqual(items, Array.from({ length: sent }, (_, k) => k + 1), "every message once, in order");
    const first = seqs[0];
    assert.deepStrictEqual(seqs, Array.from({ length: seqs.length }, (_, k) => first + k), "contiguous seqs");
    assert.deepStrictEqual(gaps, []);
    assert.deepStrictEqual(epochs, [], "the same epoch on both nodes");
    assert.strictEqual(await active(other), 1, "now on the other node");
    const st = client.stats();
    assert.strictEqual(st.duplicates, 0);
    assert.ok(st.reconnects >= 1);
  } finally {
    // Also when an assertion failed: open sockets would keep this process alive.
    if (pub) pub.close();
    client.close();
  }
});
