//! What a worker does with a subscriber's input: HTTP routing on the public listener, and the
//! subscriber side of protocol v1 (subscribe, unsubscribe, ping, heartbeat, getStats, errors).

use std::time::Instant;

use bytes::Bytes;
use log::debug;
use serde_json::value::RawValue;
use tungstenite::Message;

use super::Worker;
use crate::net::http::{self, RequestHead};
use crate::protocol::client::{self, ClientRequest, ParseLimits, RequestError, UnsubscribeTarget};
use crate::protocol::{outbound, CloseCode, ErrorCode};
use crate::routing::index::{filter_id, SubscribeError};
use crate::shared::now_ms;

impl Worker {
    /// Routes a request head on the public listener: `/ws` upgrades, `/health`, else 404.
    pub(super) fn route_http(&mut self, key: usize, head: RequestHead) {
        let config = &self.cfg;
        let response = match head.path.as_str() {
            "/ws" => match http::check_upgrade(&head) {
                Ok(ws_key) => {
                    let open: u64 = self
                        .shared
                        .stats
                        .workers
                        .iter()
                        .map(|w| w.websockets_active.get())
                        .sum();
                    if open as usize >= config.limits.max_connections {
                        Some(http::error_response(503, "over capacity, try again later"))
                    } else {
                        let ws_key = ws_key.to_string();
                        let s = &mut self.sessions[key];
                        s.conn.upgrade(&head, &ws_key, self.ws_config);
                        s.upgraded = true;
                        self.stats.handshakes.inc();
                        self.stats.websockets_active.inc();
                        debug!("conn {} upgraded", s.id);
                        self.on_upgraded(key);
                        None
                    }
                }
                Err((status, message)) => Some(http::error_response(status, message)),
            },
            "/health" if head.method == "GET" => Some(crate::admin::health_response(&self.shared)),
            "/health" => Some(http::error_response(405, "method not allowed")),
            _ => Some(http::error_response(404, "not found")),
        };
        if let Some(r) = response {
            self.stats.http_requests.inc();
            self.sessions[key].conn.respond(r);
        }
    }

    /// Handles one WebSocket message from a subscriber.
    pub(super) fn on_message(&mut self, key: usize, msg: Message) {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                if self.admit(key) {
                    self.send_error(
                        key,
                        None,
                        ErrorCode::InvalidMessage,
                        "binary frames are not supported: send JSON text frames",
                    );
                }
                return;
            }
            Message::Close(frame) => {
                let s = &mut self.sessions[key];
                match frame {
                    Some(f) => s.note_close(u16::from(f.code), &f.reason, false),
                    None => s.note_close(1005, "closed by client", false),
                }
                return;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return,
        };
        if !self.admit(key) {
            return;
        }
        self.stats.messages_received.inc();
        self.stats.last_activity_ms.set(now_ms());
        let limits = ParseLimits {
            max_name_bytes: self.cfg.limits.max_name_bytes,
        };
        match client::parse_client(text.as_str(), limits) {
            Ok(req) => self.on_request(key, req),
            Err(RequestError { id, code, message }) => {
                self.send_error(key, id.as_deref(), code, &message)
            }
        }
    }

    /// Applies the rate limit; false when the message must be refused (already answered).
    fn admit(&mut self, key: usize) -> bool {
        let limits = &self.cfg.limits;
        let (rate, burst, max_strikes) = (
            limits.messages_per_sec,
            limits.message_burst,
            limits.rate_limit_strikes,
        );
        let s = &mut self.sessions[key];
        s.messages_in += 1;
        if s.bucket.take(Instant::now(), rate, burst) {
            s.strikes = 0;
            return true;
        }
        s.strikes += 1;
        if s.strikes > max_strikes {
            self.stats.closed_rate_limit.inc();
            self.sessions[key]
                .conn
                .close(CloseCode::Policy, "rate limit exceeded repeatedly");
        } else {
            let msg = format!("more than {rate} messages per second (burst {burst})");
            self.send_error(key, None, ErrorCode::RateLimited, &msg);
        }
        false
    }

    fn on_request(&mut self, key: usize, req: ClientRequest) {
        let max_filters = self.cfg.limits.max_filters_per_connection;
        let s = &mut self.sessions[key];
        let reply: Bytes = match req {
            ClientRequest::Subscribe { id, filter } => {
                match s
                    .subs
                    .subscribe(&mut self.streams, key, filter.clone(), max_filters)
                {
                    Ok((n, new)) => {
                        if new {
                            self.stats.subscriptions_active.inc();
                        }
                        outbound::subscribed(id.as_deref(), &filter_id(n), &filter)
                    }
                    Err(SubscribeError::TooMany) => {
                        let msg = format!("at most {max_filters} filters per connection");
                        let code = ErrorCode::TooManySubscriptions;
                        return self.send_error(key, id.as_deref(), code, &msg);
                    }
                }
            }
            ClientRequest::Unsubscribe { id, target } => {
                let found = match &target {
                    UnsubscribeTarget::FilterId(fid) => s.subs.find_id(fid),
                    UnsubscribeTarget::Fields(filter) => s.subs.find(filter),
                };
                match found {
                    Some(n) => {
                        s.subs.unsubscribe(&mut self.streams, key, n);
                        self.stats.subscriptions_active.sub(1);
                        outbound::unsubscribed(id.as_deref(), &filter_id(n))
                    }
                    None => {
                        let msg = match target {
                            UnsubscribeTarget::FilterId(fid) => {
                                let shown: String = fid.chars().take(32).collect();
                                format!("no filter `{shown}` on this connection")
                            }
                            UnsubscribeTarget::Fields(_) => {
                                "no filter with these fields on this connection".to_string()
                            }
                        };
                        return self.send_error(key, id.as_deref(), ErrorCode::NotFound, &msg);
                    }
                }
            }
            ClientRequest::Ping { id } => outbound::pong(id.as_deref(), now_ms()),
            ClientRequest::Heartbeat => outbound::heartbeat_ack(now_ms()),
            ClientRequest::GetStats { id } => {
                outbound::stats(id.as_deref(), &s.stats_reply(self.index))
            }
            ClientRequest::Publish { id } => {
                let msg = "publishing is only allowed on the ingest listener (/publish)";
                return self.send_error(key, id.as_deref(), ErrorCode::Forbidden, msg);
            }
        };
        s.conn.send(reply);
    }

    /// Sends an `error` reply and counts it.
    pub(super) fn send_error(
        &mut self,
        key: usize,
        id: Option<&RawValue>,
        code: ErrorCode,
        message: &str,
    ) {
        self.stats.errors[code.index()].inc();
        let s = &mut self.sessions[key];
        s.errors += 1;
        s.conn.send(outbound::error(id, code, message, None));
    }

    /// Fails a connection that broke the protocol: error reply where one helps, then the
    /// close code.
    pub(super) fn fail(&mut self, key: usize, code: CloseCode, reason: &str) {
        if code == CloseCode::TooBig {
            self.send_error(key, None, ErrorCode::MessageTooLarge, reason);
        }
        self.stats.closed_protocol.inc();
        let s = &mut self.sessions[key];
        debug!("conn {} failed with {}: {reason}", s.id, code.as_u16());
        let short: String = reason.chars().take(100).collect();
        s.note_close(code.as_u16(), &short, true);
        s.conn.fail(code, &short);
    }
}
