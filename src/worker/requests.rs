//! What a worker does with a subscriber's input: HTTP routing on the public listener, and the
//! subscriber side of protocol v1 (subscribe, unsubscribe, ping, heartbeat, getStats, errors).

use bytes::Bytes;
use log::debug;
use serde_json::value::RawValue;
use tungstenite::Message;

use super::session::SessionAuth;
use super::Worker;
use crate::admission::UserConn;
use crate::auth::{self, channels};
use crate::bus::WorkerMsg;
use crate::net::http::{self, RequestHead};
use crate::protocol::client::{self, ClientRequest, ParseLimits, RequestError, UnsubscribeTarget};
use crate::protocol::{outbound, CloseCode, ErrorCode};
use crate::routing::index::{filter_id, SubscribeError};
use crate::shared::now_ms;

impl Worker {
    /// Routes a request head on the public listener: `/ws` upgrades (after the per-IP,
    /// origin, token, capacity and per-user checks), `/health`, else 404.
    pub(super) fn route_http(&mut self, key: usize, head: RequestHead) {
        let response = if let Some(why) = self.sessions[key].refused.clone() {
            self.stats.refused_per_ip.inc();
            debug!("conn {} refused: {why}", self.sessions[key].id);
            Some(http::error_response(429, &why))
        } else {
            match head.path.as_str() {
                "/ws" => self.admit_upgrade(key, &head).err(),
                "/health" if head.method == "GET" => {
                    Some(crate::admin::health_response(&self.shared))
                }
                "/health" => Some(http::error_response(405, "method not allowed")),
                _ => Some(http::error_response(404, "not found")),
            }
        };
        if let Some(r) = response {
            self.stats.http_requests.inc();
            self.sessions[key].conn.respond(r);
        }
    }

    /// Checks an upgrade request and upgrades, or returns the HTTP refusal. Order: a valid
    /// upgrade (400/405/426), the origin (403), the token (401), capacity (503), the user's
    /// connection limit (429, or the older connection is replaced with 4002).
    fn admit_upgrade(&mut self, key: usize, head: &RequestHead) -> Result<(), Bytes> {
        let ws_key =
            http::check_upgrade(head).map_err(|(status, msg)| http::error_response(status, msg))?;
        let cfg = self.cfg.clone();
        let id = self.sessions[key].id;
        if !auth::origin_allowed(&cfg.auth, head) {
            self.stats.refused_origin.inc();
            debug!("conn {id} refused: origin {:?} not allowed", head.origin);
            return Err(http::error_response(403, "origin not allowed"));
        }
        let identity = match &self.auth {
            None => None,
            Some(a) => match auth::token_of(head)
                .ok_or_else(|| "missing token".to_string())
                .and_then(|t| a.check(&t).map_err(|e| e.0))
            {
                Ok(identity) => Some(identity),
                Err(why) => {
                    self.stats.refused_unauthorized.inc();
                    debug!("conn {id} refused: {why}");
                    let body = format!("{why}\n");
                    return Err(http::response(
                        401,
                        "text/plain; charset=utf-8",
                        body.as_bytes(),
                        &[("WWW-Authenticate", "Bearer")],
                    ));
                }
            },
        };
        let open: u64 = self
            .shared
            .stats
            .workers
            .iter()
            .map(|w| w.websockets_active.get())
            .sum();
        if open as usize >= cfg.limits.max_connections {
            self.stats.refused_capacity.inc();
            return Err(http::error_response(503, "over capacity, try again later"));
        }
        let mut replaced = Vec::new();
        if let Some(identity) = &identity {
            let me = UserConn {
                worker: self.index,
                conn: id,
            };
            match self.shared.admission.register_user(
                &identity.user,
                me,
                cfg.limits.connections_per_user,
            ) {
                Ok(old) => replaced = old,
                Err(why) => {
                    self.stats.refused_per_user.inc();
                    debug!("conn {id} refused: {}", why.0);
                    return Err(http::error_response(429, &why.0));
                }
            }
        }
        let s = &mut self.sessions[key];
        s.conn.upgrade(head, ws_key, self.ws_config);
        s.upgraded = true;
        if let Some(identity) = identity {
            debug!("conn {id} upgraded for user {}", identity.user);
            s.auth = Some(Box::new(SessionAuth {
                user: identity.user,
                expires_ms: identity.expires_ms,
                channels: identity.channels,
            }));
        } else {
            debug!("conn {id} upgraded");
        }
        self.stats.handshakes.inc();
        self.stats.websockets_active.inc();
        self.on_upgraded(key);
        self.arm_token_expiry(key);
        // The new connection is registered: now close the ones it replaces (outside the lock).
        for old in replaced {
            if old.worker == self.index {
                self.replace(old.conn);
            } else if let Some(link) = self.shared.link(old.worker) {
                if link.try_send(WorkerMsg::Replace { conn: old.conn }) {
                    link.wake_now();
                }
            }
        }
        Ok(())
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
        if s.bucket.take(self.now, rate, burst) {
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
            ClientRequest::Subscribe {
                id,
                filter,
                options,
            } => {
                if let Some(patterns) = s.auth.as_ref().and_then(|a| a.channels.as_ref()) {
                    if !channels::filter_allowed(&filter, patterns) {
                        self.stats.forbidden_subscriptions.inc();
                        let msg = "not entitled to every stream of this filter (token channels)";
                        return self.send_error(key, id.as_deref(), ErrorCode::Forbidden, msg);
                    }
                }
                let throttle = options.throttle_ms;
                let subscribed = s.subs.subscribe(
                    &mut self.streams,
                    key,
                    filter.clone(),
                    throttle,
                    max_filters,
                );
                s.subs_changed();
                match subscribed {
                    Ok(done) => {
                        if done.new {
                            self.stats.subscriptions_active.inc();
                        }
                        let (recovery, frames) = self.recover(&done.added, &options);
                        let epoch = self.shared.epoch();
                        let fid = filter_id(done.n);
                        let reply = outbound::subscribed(
                            id.as_deref(),
                            &fid,
                            &filter,
                            throttle,
                            &epoch,
                            recovery.as_ref(),
                        );
                        self.sessions[key].conn.send(reply);
                        self.queue_recovered(key, frames);
                        return;
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
                        s.subs_changed();
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
            ClientRequest::Refresh { id, token } => {
                return self.refresh(key, id.as_deref(), &token)
            }
            ClientRequest::Publish { id } => {
                let msg = "publishing is only allowed on the ingest listener (/publish)";
                return self.send_error(key, id.as_deref(), ErrorCode::Forbidden, msg);
            }
        };
        s.conn.send(reply);
    }

    /// `refresh`: a new token for the same user extends the connection's life (and replaces
    /// its channels); a bad one gets FORBIDDEN and changes nothing.
    fn refresh(&mut self, key: usize, id: Option<&RawValue>, token: &str) {
        let Some(a) = &self.auth else {
            let msg = "authentication is off: there is nothing to refresh";
            return self.send_error(key, id, ErrorCode::InvalidMessage, msg);
        };
        let s = &mut self.sessions[key];
        match a.check(token) {
            Ok(identity) if Some(&identity.user) == s.auth.as_ref().map(|a| &a.user) => {
                if let Some(session_auth) = s.auth.as_mut() {
                    session_auth.expires_ms = identity.expires_ms;
                    session_auth.channels = identity.channels;
                }
                s.conn.send(outbound::refreshed(id, identity.expires_ms));
                self.arm_token_expiry(key);
            }
            Ok(_) => self.send_error(
                key,
                id,
                ErrorCode::Forbidden,
                "the token is for another user",
            ),
            Err(e) => self.send_error(key, id, ErrorCode::Forbidden, &e.0),
        }
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
