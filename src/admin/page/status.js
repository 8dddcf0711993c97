// The status page: polls /stats and /health on this admin listener once a second, keeps five
// minutes of samples for the charts, and shows live tickers through the tickfan.js client
// connected to the public listener (?ws=URL overrides it; ?token=JWT is passed on).
(function () {
  "use strict";
  var HISTORY = 300; // samples, one a second
  var samples = []; // {t, connections, accepted, delivered, p50, p99, dropped, slow}
  var previous = null;
  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(location.search);

  function fmt(n, digits) {
    if (n === null || n === undefined || isNaN(n)) return "–";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return n.toFixed(digits === undefined ? 0 : digits);
  }
  function bytes(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + " GiB";
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
    return (n / 1024).toFixed(0) + " KiB";
  }
  function duration(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + "d " : "") + (h || d ? h + "h " : "") + m + "m " + (s % 60) + "s";
  }
  function dropsOf(s) {
    var d = s.delivery;
    return d.droppedSlowConsumer + d.droppedOnClose + s.droppedChannelFull;
  }

  // --- charts -------------------------------------------------------------------------------
  function draw(canvas, series, colors) {
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
    var g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    var max = 0;
    series.forEach(function (s) { s.forEach(function (v) { if (v > max) max = v; }); });
    max = max > 0 ? max * 1.15 : 1;
    var left = 44, bottom = 16, plotW = w - left - 6, plotH = h - bottom - 6;
    g.strokeStyle = "#263140"; g.fillStyle = "#7f8c9d"; g.font = "11px system-ui"; g.lineWidth = 1;
    for (var i = 0; i <= 3; i++) {
      var y = 6 + plotH - plotH * i / 3;
      g.beginPath(); g.moveTo(left, y); g.lineTo(left + plotW, y); g.stroke();
      g.fillText(fmt(max * i / 3, max < 10 ? 1 : 0), 2, y + 4);
    }
    g.fillText("-5 min", left, h - 3);
    g.fillText("now", left + plotW - 22, h - 3);
    series.forEach(function (s, k) {
      g.strokeStyle = colors[k]; g.lineWidth = 1.6; g.beginPath();
      var n = s.length;
      for (var j = 0; j < n; j++) {
        var x = left + plotW * (HISTORY - n + j) / (HISTORY - 1);
        var yy = 6 + plotH - plotH * s[j] / max;
        if (j === 0) g.moveTo(x, yy); else g.lineTo(x, yy);
      }
      g.stroke();
    });
  }
  function col(name) { return samples.map(function (s) { return s[name]; }); }
  function redraw() {
    var c0 = getComputedStyle(document.documentElement).getPropertyValue("--c0").trim() || "#4ea1ff";
    var c1 = getComputedStyle(document.documentElement).getPropertyValue("--c1").trim() || "#f08c3a";
    draw($("chart-connections"), [col("connections")], [c0]);
    draw($("chart-rates"), [col("accepted"), col("delivered")], [c0, c1]);
    draw($("chart-latency"), [col("p50"), col("p99")], [c0, c1]);
    draw($("chart-drops"), [col("dropped"), col("slow")], [c0, c1]);
  }

  // --- polling ------------------------------------------------------------------------------
  function onStats(s) {
    var t = Date.now();
    var sample = { t: t, connections: s.activeConnections, p50: s.latencyRecentMs.p50, p99: s.latencyRecentMs.p99,
                   accepted: 0, delivered: 0, dropped: 0, slow: 0 };
    var workerRates = {};
    if (previous) {
      var dt = Math.max(0.001, (t - previous.t) / 1000);
      var p = previous.s;
      sample.accepted = Math.max(0, (s.messagesAccepted - p.messagesAccepted) / dt);
      sample.delivered = Math.max(0, (s.delivery.written - p.delivery.written) / dt);
      sample.dropped = Math.max(0, (dropsOf(s) - dropsOf(p)) / dt);
      sample.slow = Math.max(0, (s.delivery.disconnectedSlow - p.delivery.disconnectedSlow) / dt);
      p.workers.forEach(function (w) { workerRates[w.worker] = { routed: w.messagesForwarded, turns: w.loopTurns, dt: dt }; });
    }
    previous = { t: t, s: s };
    samples.push(sample);
    if (samples.length > HISTORY) samples.shift();

    $("c-connections").textContent = fmt(s.activeConnections);
    $("c-subscriptions").textContent = fmt(s.totalSubscriptions);
    $("c-accepted").textContent = fmt(sample.accepted);
    $("c-delivered").textContent = fmt(sample.delivered);
    $("c-latency").textContent = fmt(s.latencyRecentMs.p50, 2) + " / " + fmt(s.latencyRecentMs.p99, 2);
    $("c-memory").textContent = bytes(s.residentMemoryBytes);
    $("c-dropped").textContent = fmt(dropsOf(s));
    $("c-slow").textContent = fmt(s.delivery.disconnectedSlow + s.delivery.memoryShed);
    $("uptime").textContent = duration(s.uptime);
    $("updated").textContent = "updated " + new Date(t).toLocaleTimeString();

    var body = $("workers").tBodies[0];
    body.textContent = "";
    s.workers.forEach(function (w) {
      var r = workerRates[w.worker];
      var routed = r ? (w.messagesForwarded - r.routed) / r.dt : 0;
      var turns = r ? (w.loopTurns - r.turns) / r.dt : 0;
      var tr = document.createElement("tr");
      [w.worker, fmt(w.activeConnections), fmt(routed), fmt(turns), bytes(w.pendingBytes), fmt(w.latencyMs.p99, 2)].forEach(function (v, i) {
        var td = document.createElement("td"); td.textContent = v; if (i) td.className = "num"; tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var src = $("sources").tBodies[0];
    src.textContent = "";
    var rows = [["publishers", s.publishers > 0 ? "up" : "none", s.publishers + " connected, " + fmt(s.acceptedFromPublishers) + " accepted"]];
    if (s.acceptedFromFeed) rows.push(["synthetic feed", "up", fmt(s.acceptedFromFeed) + " accepted"]);
    if (s.bus) rows.push(["redis bus (" + s.bus.role + ")", s.bus.state, fmt(s.bus.received) + " received, " + fmt(s.bus.published) + " published, " + fmt(s.bus.gapMessages + s.bus.lostBusDown) + " lost"]);
    (s.upstreams || []).forEach(function (u) {
      rows.push(["upstream " + u.name, u.state, fmt(u.messages) + " messages, " + u.connects + " connects, " + u.stale + " stale"]);
    });
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      r.forEach(function (v, i) {
        var td = document.createElement("td");
        if (i === 1) { var b = document.createElement("span"); b.className = "badge " + (v === "up" ? "connected" : v === "none" ? "" : "down"); b.textContent = v; td.appendChild(b); }
        else td.textContent = v;
        tr.appendChild(td);
      });
      src.appendChild(tr);
    });
    redraw();
  }

  function poll() {
    fetch("/stats", { cache: "no-store" }).then(function (r) { return r.json(); }).then(onStats)
      .catch(function () { $("updated").textContent = "stats unavailable"; });
    fetch("/health", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (h) {
      var b = $("health"); b.textContent = h.status; b.className = "badge " + h.status;
      $("reasons").textContent = (h.reasons || []).join("; ");
    }).catch(function () { var b = $("health"); b.textContent = "unreachable"; b.className = "badge unhealthy"; });
  }

  // --- live tickers -------------------------------------------------------------------------
  var tickers = {}; // "exchange:symbol" -> {row, first, last}
  function priceOf(m) {
    var d = m.data || {};
    var p = d.last || d.price || d.p || d.c || d.lastPrice;
    var n = parseFloat(p);
    return isNaN(n) ? null : n;
  }
  function onData(m) {
    var price = priceOf(m);
    if (price === null) return;
    var key = m.exchange + ":" + m.symbol;
    var t = tickers[key];
    if (!t) {
      var tr = document.createElement("tr");
      for (var i = 0; i < 6; i++) { var td = document.createElement("td"); if (i >= 2) td.className = "num"; tr.appendChild(td); }
      tr.cells[0].textContent = m.exchange; tr.cells[1].textContent = m.symbol;
      tr.cells[2].classList.add("price");
      t = tickers[key] = { row: tr, first: price, last: price };
      var body = $("tickers").tBodies[0];
      var keys = Object.keys(tickers).sort();
      var before = keys[keys.indexOf(key) + 1];
      body.insertBefore(tr, before ? tickers[before].row : null);
    }
    t.row.className = price > t.last ? "up flash" : price < t.last ? "down flash" : t.row.className;
    t.last = price;
    var change = (price - t.first) / t.first * 100;
    t.row.cells[2].textContent = price.toString();
    t.row.cells[3].textContent = (change >= 0 ? "+" : "") + change.toFixed(3) + "%";
    t.row.cells[4].textContent = m.seq;
    t.row.cells[5].textContent = new Date(m.ts).toLocaleTimeString();
    clearTimeout(t.timer);
    t.timer = setTimeout(function () { t.row.classList.remove("flash"); }, 300);
  }

  function startClient(info) {
    var url = params.get("ws");
    if (!url) {
      if (!info.publicPort) { $("client-state").textContent = "public listener off"; return; }
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      url = scheme + location.hostname + ":" + info.publicPort + info.wsPath;
    }
    if (params.get("token")) url += (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(params.get("token"));
    var client = new Tickfan.TickfanClient(url, {
      onData: onData,
      onStateChange: function (state) { var b = $("client-state"); b.textContent = state; b.className = "badge " + state; },
      onError: function (e) { $("client-stats").textContent = String(e.message || e); },
      snapshot: true,
    });
    client.subscribe({ dataTypes: ["ticker", "trade"] });
    client.connect().catch(function () { /* state and onError show it */ });
    window.tickfanStatusClient = client;
    setInterval(function () {
      var s = client.stats();
      $("client-stats").textContent = s.messages + " msgs · " + s.reconnects + " reconnects · " + s.gaps + " gaps · availability " + (s.availability * 100).toFixed(1) + "%";
    }, 1000);
  }

  fetch("/info", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (info) {
    $("epoch").textContent = info.epoch;
    startClient(info);
  }).catch(function () { $("client-state").textContent = "no /info"; });
  poll();
  setInterval(poll, 1000);
  window.addEventListener("resize", redraw);
})();
