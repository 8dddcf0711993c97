/*
 * tickfan.js: a resilient, gap-aware client for the tickfan market-data gateway.
 *
 * No build step, no dependencies. Works in browsers (<script src="/client.js">, which defines
 * `Tickfan`) and in Node.js 22+ (or Node.js 20 run with --experimental-websocket) through the
 * global WebSocket: `const { TickfanClient } = require("./tickfan.js")`.
 *
 *   const client = new Tickfan.TickfanClient("ws://host:8080/ws", {
 *     onData: (msg) => console.log(msg.symbol, msg.seq, msg.data),
 *     onGap: (gap) => console.warn("gap", gap),
 *     onStateChange: (state, previous) => console.log(state),
 *   });
 *   client.subscribe({ exchange: ["binance"], symbols: ["BTCUSDT"], dataTypes: ["trade"] });
 *   client.connect();
 *
 * One connection per client object: concurrent connect() calls share one attempt. States:
 * disconnected -> connecting -> connected -> reconnecting -> connected ... Reconnects back off
 * from 1 s doubling to 30 s with +/-30% jitter; heartbeats (a JSON ping every 15 s, any message
 * counts as an answer) find dead connections; after a reconnect every filter is subscribed again
 * with a resume (epoch + last seq per stream), so nothing is missed or repeated while the
 * gateway's history reaches back; what cannot be recovered is reported through onGap.
 * See docs/clients.md.
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) {
    module.exports = factory();
  } else {
    root.Tickfan = factory();
  }
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";

  var DEFAULTS = {
    reconnectMinMs: 1000,
    reconnectMaxMs: 30000,
    jitter: 0.3,
    heartbeatIntervalMs: 15000,
    heartbeatTimeoutMs: 10000,
    connectTimeoutMs: 10000,
    snapshot: true,
    // Close codes after which reconnecting would not help: policy (bad token) and replaced
    // (a newer connection of the same user took over).
    fatalCloseCodes: [1008, 4002],
  };

  function streamKey(m) {
    return m.exchange + ":" + m.symbol + ":" + m.dataType;
  }

  function fieldMatches(list, name) {
    return !list || list.indexOf("*") >= 0 || list.indexOf(name) >= 0;
  }

  /** Whether a filter ({exchange, symbols, dataTypes}) matches a stream key. */
  function filterMatches(filter, key) {
    var parts = key.split(":");
    if (parts.length < 3) return false;
    var dataType = parts.pop();
    var exchange = parts.shift();
    var symbol = parts.join(":");
    return (
      fieldMatches(filter.exchange, exchange) &&
      fieldMatches(filter.symbols, symbol) &&
      fieldMatches(filter.dataTypes, dataType)
    );
  }

  /**
   * Exponential backoff with jitter: the delay for attempt n (0-based) is
   * min(max, min * 2^n) * (1 +/- jitter).
   */
  function backoffDelay(attempt, opts, random) {
    var base = Math.min(opts.reconnectMaxMs, opts.reconnectMinMs * Math.pow(2, attempt));
    var r = (random || Math.random)();
    return Math.round(base * (1 - opts.jitter + 2 * opts.jitter * r));
  }

  function now() {
    return Date.now();
  }

  /**
   * A client of one tickfan gateway.
   * @param {string} url  ws:// or wss:// URL of the gateway's /ws (add ?token=... if needed)
   * @param {object} options  callbacks (onData, onGap, onStateChange, onError, onEpoch) and
   *   settings (see DEFAULTS); `WebSocket` may be given to use another implementation.
   */
  function TickfanClient(url, options) {
    if (!(this instanceof TickfanClient)) return new TickfanClient(url, options);
    this.url = url;
    this.options = {};
    var k;
    for (k in DEFAULTS) this.options[k] = DEFAULTS[k];
    for (k in options || {}) this.options[k] = options[k];
    this.WebSocketImpl = this.options.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
    if (!this.WebSocketImpl) {
      throw new Error("no WebSocket: use a browser, Node.js 22+, or node --experimental-websocket");
    }
    this.state = "disconnected";
    this.ws = null;
    this.epoch = null;
    this.lastSeq = {}; // stream key -> last seq seen
    this.filters = []; // {exchange, symbols, dataTypes, throttleMs}
    this._listeners = { data: [], gap: [], state: [], error: [], epoch: [] };
    this._connecting = null; // the shared promise of connect()
    this._resolve = null;
    this._reject = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._heartbeatTimer = null;
    this._lastMessageAt = 0;
    this._pingSentAt = 0;
    this._nextId = 1;
    this._closedByUser = false;
    this._stats = {
      connects: 0,
      reconnects: 0,
      messages: 0,
      gaps: 0,
      missedMessages: 0,
      duplicates: 0,
      heartbeatTimeouts: 0,
      firstConnectedAt: 0,
      connectedSince: 0,
      downSince: 0,
      upMs: 0,
      downMs: 0,
      lastCloseCode: null,
    };
    if (this.options.onData) this.on("data", this.options.onData);
    if (this.options.onGap) this.on("gap", this.options.onGap);
    if (this.options.onStateChange) this.on("state", this.options.onStateChange);
    if (this.options.onError) this.on("error", this.options.onError);
    if (this.options.onEpoch) this.on("epoch", this.options.onEpoch);
  }

  TickfanClient.prototype.on = function (event, fn) {
    if (!this._listeners[event]) throw new Error("unknown event " + event);
    this._listeners[event].push(fn);
    return this;
  };

  TickfanClient.prototype._emit = function (event, a, b) {
    var list = this._listeners[event];
    for (var i = 0; i < list.length; i++) {
      try {
        list[i](a, b);
      } catch (e) {
        if (event !== "error") this._emit("error", e);
      }
    }
  };

  TickfanClient.prototype._setState = function (state) {
    if (state === this.state) return;
    var previous = this.state;
    var t = now();
    var s = this._stats;
    if (previous === "connected" && s.connectedSince) {
      s.upMs += t - s.connectedSince;
      s.connectedSince = 0;
    }
    if (state === "connected") {
      if (s.downSince) s.downMs += t - s.downSince;
      s.downSince = 0;
      s.connectedSince = t;
      if (!s.firstConnectedAt) s.firstConnectedAt = t;
    } else if (previous === "connected") {
      s.downSince = t;
    }
    this.state = state;
    this._emit("state", state, previous);
  };

  /**
   * Opens the connection (if not open or opening) and resolves when it is connected. Calls
   * made while connecting share the same attempt: there is only ever one socket.
   */
  TickfanClient.prototype.connect = function () {
    this._closedByUser = false;
    if (this.state === "connected") return Promise.resolve(this);
    if (this._connecting) return this._connecting;
    var self = this;
    this._connecting = new Promise(function (resolve, reject) {
      self._resolve = resolve;
      self._reject = reject;
    });
    // Avoid unhandled-rejection noise for callers that ignore the promise.
    this._connecting.catch(function () {});
    if (this.state === "disconnected") this._open();
    return this._connecting;
  };

  TickfanClient.prototype._open = function () {
    var self = this;
    this._clearRetry();
    this._setState(this._stats.connects > 0 ? "reconnecting" : "connecting");
    var ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (e) {
      this._emit("error", e);
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    var opened = false;
    var openTimer = setTimeout(function () {
      if (!opened && self.ws === ws) {
        self._emit("error", new Error("connect timeout"));
        try {
          ws.close();
        } catch (e) {
          /* already closing */
        }
        self._onClose(ws, 1006, "connect timeout");
      }
    }, this.options.connectTimeoutMs);
    ws.onopen = function () {
      if (self.ws !== ws) return;
      opened = true;
      clearTimeout(openTimer);
      self._stats.connects += 1;
      if (self._stats.connects > 1) self._stats.reconnects += 1;
      self._lastMessageAt = now();
      self._setState("connected");
      self._resubscribe();
      self._startHeartbeat();
      if (self._resolve) {
        self._resolve(self);
        self._resolve = self._reject = null;
        self._connecting = null;
      }
    };
    ws.onmessage = function (ev) {
      if (self.ws !== ws) return;
      self._lastMessageAt = now();
      self._onMessage(ev.data);
    };
    ws.onerror = function () {
      /* onclose follows with the code */
    };
    ws.onclose = function (ev) {
      clearTimeout(openTimer);
      self._onClose(ws, ev.code, ev.reason);
    };
  };

  TickfanClient.prototype._onClose = function (ws, code, reason) {
    if (this.ws !== ws) return;
    this.ws = null;
    this._stopHeartbeat();
    this._stats.lastCloseCode = code;
    if (this._closedByUser) {
      this._setState("disconnected");
      return;
    }
    if (this.options.fatalCloseCodes.indexOf(code) >= 0) {
      var err = new Error("closed by the gateway with " + code + (reason ? " (" + reason + ")" : "") + ": not reconnecting");
      this._emit("error", err);
      this._setState("disconnected");
      if (this._reject) {
        this._reject(err);
        this._resolve = this._reject = null;
        this._connecting = null;
      }
      return;
    }
    this._scheduleReconnect();
  };

  TickfanClient.prototype._scheduleReconnect = function () {
    var self = this;
    this._setState("reconnecting");
    var delay = backoffDelay(this._attempt, this.options);
    this._attempt += 1;
    this._clearRetry();
    this._retryTimer = setTimeout(function () {
      self._retryTimer = null;
      if (!self._closedByUser && !self.ws) self._open();
    }, delay);
    this.nextRetryMs = delay;
  };

  TickfanClient.prototype._clearRetry = function () {
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
  };

  TickfanClient.prototype._startHeartbeat = function () {
    var self = this;
    this._stopHeartbeat();
    var tick = Math.min(this.options.heartbeatIntervalMs, this.options.heartbeatTimeoutMs) / 2;
    this._pingSentAt = 0;
    this._heartbeatTimer = setInterval(function () {
      var t = now();
      if (self._pingSentAt && self._lastMessageAt < self._pingSentAt && t - self._pingSentAt >= self.options.heartbeatTimeoutMs) {
        // Nothing at all since our ping: the connection is dead even if the socket says open.
        self._stats.heartbeatTimeouts += 1;
        var ws = self.ws;
        try {
          ws.close(4000, "heartbeat timeout");
        } catch (e) {
          /* ignore */
        }
        self._onClose(ws, 4000, "heartbeat timeout");
        return;
      }
      if (t - self._lastMessageAt >= self.options.heartbeatIntervalMs && (!self._pingSentAt || self._lastMessageAt >= self._pingSentAt)) {
        self._pingSentAt = t;
        self._send({ type: "ping", id: "hb" });
      }
    }, Math.max(50, tick));
  };

  TickfanClient.prototype._stopHeartbeat = function () {
    if (this._heartbeatTimer) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  };

  TickfanClient.prototype._send = function (obj) {
    if (this.ws && this.state === "connected") {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  };

  TickfanClient.prototype._subscribeMessage = function (filter) {
    var msg = { type: "subscribe", id: "s" + this._nextId++ };
    if (filter.exchange) msg.exchange = filter.exchange;
    if (filter.symbols) msg.symbols = filter.symbols;
    if (filter.dataTypes) msg.dataTypes = filter.dataTypes;
    if (filter.throttleMs) msg.throttleMs = filter.throttleMs;
    if (this.options.snapshot) msg.snapshot = true;
    if (this.epoch) {
      var streams = {};
      var any = false;
      for (var key in this.lastSeq) {
        if (filterMatches(filter, key)) {
          streams[key] = this.lastSeq[key];
          any = true;
        }
      }
      if (any) msg.resume = { epoch: this.epoch, streams: streams };
    }
    return msg;
  };

  /**
   * Adds a filter ({exchange, symbols, dataTypes}, each an array; missing = all; optional
   * throttleMs). It is sent now if connected, and again (with a resume) after every reconnect.
   */
  TickfanClient.prototype.subscribe = function (filter) {
    var f = {
      exchange: filter.exchange || null,
      symbols: filter.symbols || null,
      dataTypes: filter.dataTypes || null,
      throttleMs: filter.throttleMs || 0,
    };
    this.filters.push(f);
    this._send(this._subscribeMessage(f));
    return this;
  };

  TickfanClient.prototype._resubscribe = function () {
    for (var i = 0; i < this.filters.length; i++) {
      this._send(this._subscribeMessage(this.filters[i]));
    }
  };

  TickfanClient.prototype._onMessage = function (text) {
    var msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      this._emit("error", new Error("gateway sent invalid JSON"));
      return;
    }
    switch (msg.type) {
      case "data":
        this._onData(msg);
        break;
      case "subscribed":
        this._onSubscribed(msg);
        break;
      case "dropped":
        this._stats.gaps += 1;
        this._stats.missedMessages += msg.count || 0;
        this._emit("gap", {
          stream: streamKey(msg),
          missed: msg.count,
          reason: msg.reason,
        });
        break;
      case "error":
        this._emit("error", new Error(msg.code + ": " + msg.message));
        break;
      default:
        break; // pong, heartbeat_ack, stats, unsubscribed, refreshed
    }
  };

  TickfanClient.prototype._onSubscribed = function (msg) {
    if (msg.epoch && msg.epoch !== this.epoch) {
      var previous = this.epoch;
      this.epoch = msg.epoch;
      if (previous) {
        // A new sequence: every seq we hold belongs to the old one.
        this.lastSeq = {};
        this._emit("epoch", msg.epoch, previous);
      }
    }
    var failed = msg.notRecovered || {};
    for (var key in failed) {
      delete this.lastSeq[key];
      this._stats.gaps += 1;
      this._emit("gap", { stream: key, reason: "resume failed: " + failed[key] });
    }
  };

  TickfanClient.prototype._onData = function (msg) {
    var key = streamKey(msg);
    var last = this.lastSeq[key];
    // A snapshot ("snapshot":true) starts a stream over: its seq is the new base.
    if (last !== undefined && !msg.snapshot) {
      if (msg.seq <= last) {
        this._stats.duplicates += 1;
        return;
      }
      if (msg.seq > last + 1) {
        var missed = msg.seq - last - 1;
        this._stats.gaps += 1;
        this._stats.missedMessages += missed;
        this._emit("gap", { stream: key, from: last + 1, to: msg.seq - 1, missed: missed });
      }
    }
    this.lastSeq[key] = msg.seq;
    this._stats.messages += 1;
    // A healthy stream resets the backoff.
    this._attempt = 0;
    this._emit("data", msg);
  };

  /** Closes the connection and stops reconnecting. */
  TickfanClient.prototype.close = function () {
    this._closedByUser = true;
    this._clearRetry();
    this._stopHeartbeat();
    var ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(1000, "client closed");
      } catch (e) {
        /* ignore */
      }
    }
    if (this._reject) {
      this._reject(new Error("closed"));
      this._resolve = this._reject = null;
      this._connecting = null;
    }
    this._setState("disconnected");
  };

  /** Counters: connects, reconnects, messages, gaps, missed messages, duplicates, up and down
   * time, and availability (the share of time connected since the first connect). */
  TickfanClient.prototype.stats = function () {
    var s = this._stats;
    var t = now();
    var up = s.upMs + (s.connectedSince ? t - s.connectedSince : 0);
    var down = s.downMs + (s.downSince ? t - s.downSince : 0);
    return {
      state: this.state,
      connects: s.connects,
      reconnects: s.reconnects,
      messages: s.messages,
      gaps: s.gaps,
      missedMessages: s.missedMessages,
      duplicates: s.duplicates,
      heartbeatTimeouts: s.heartbeatTimeouts,
      uptimeMs: up,
      downtimeMs: down,
      availability: up + down > 0 ? up / (up + down) : 0,
      epoch: this.epoch,
      streams: Object.keys(this.lastSeq).length,
      lastCloseCode: s.lastCloseCode,
    };
  };

  return {
    TickfanClient: TickfanClient,
    filterMatches: filterMatches,
    backoffDelay: backoffDelay,
    DEFAULTS: DEFAULTS,
  };
});
