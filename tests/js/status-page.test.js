// The status page in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core),
// run by tests/clients.rs: `node tests/js/status-page.test.js ADMIN_URL SCREENSHOT.png`.
// Checks that the page loads, shows a non-zero connection count and ticking prices, draws its
// charts, and logs no console errors; saves a screenshot.
"use strict";

const { chromium } = require("playwright-core");

async function main() {
  const [adminUrl, shot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
    page.on("pageerror", (e) => errors.push("page: " + e.message));
    page.on("requestfailed", (r) => errors.push("request failed: " + r.url()));
    const resp = await page.goto(adminUrl, { waitUntil: "load" });
    if (!resp || resp.status() !== 200) throw new Error("status page answered " + (resp && resp.status()));
    if ((await page.title()) !== "tickfan status") throw new Error("wrong title");

    await page.waitForFunction(() => parseInt(document.getElementById("c-connections").textContent, 10) > 0, null, { timeout: 15000 });
    await page.waitForFunction(() => document.getElementById("client-state").textContent === "connected", null, { timeout: 15000 });
    await page.waitForFunction(() => document.querySelectorAll("#tickers tbody tr").length >= 3, null, { timeout: 15000 });
    const prices = () => page.$$eval("#tickers tbody tr", (rows) => rows.map((r) => r.cells[1].textContent + "=" + r.cells[2].textContent + "#" + r.cells[4].textContent).join(" "));
    const before = await prices();
    await page.waitForFunction((b) => {
      const now = Array.from(document.querySelectorAll("#tickers tbody tr")).map((r) => r.cells[1].textContent + "=" + r.cells[2].textContent + "#" + r.cells[4].textContent).join(" ");
      return now !== b;
    }, before, { timeout: 15000 });
    const after = await prices();
    // Enough samples for the rate charts, and a chart with something drawn on it.
    await page.waitForFunction(() => parseFloat(document.getElementById("c-delivered").textContent) > 0, null, { timeout: 15000 });
    await page.waitForTimeout(1500);
    const inked = await page.$eval("#chart-rates", (c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    });
    if (inked < 200) throw new Error("the rates chart is empty (" + inked + " pixels)");
    const workers = await page.$$eval("#workers tbody tr", (rows) => rows.length);
    if (workers < 1) throw new Error("no worker rows");
    const health = await page.$eval("#health", (b) => b.textContent);
    await page.screenshot({ path: shot, fullPage: true });
    const connections = await page.$eval("#c-connections", (e) => e.textContent);
    console.log(JSON.stringify({ connections, health, workers, inked, ticked: before !== after, rows: after.split(" ").length, sample: after.slice(0, 120) }));
  } finally {
    await browser.close();
  }
  if (errors.length) {
    throw new Error("errors in the page:\n" + errors.join("\n"));
  }
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
