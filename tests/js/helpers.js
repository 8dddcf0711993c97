// Helpers shared by the Node.js tests.
"use strict";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` (sync or async) every 20 ms until it is true, or throws after `timeoutMs`. */
async function waitFor(what, cond, timeoutMs = 10000) {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return;
    if (Date.now() - t0 > timeoutMs) throw new Error("timed out waiting for " + what);
    await sleep(20);
  }
}

module.exports = { sleep, waitFor };
