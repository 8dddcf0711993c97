//! A worker that serves the ingest listener itself (`server.ingest_placement`, by default with
//! one worker): the ingest listener and the publisher sockets are registered in the worker's
//! own poll, and a publisher's frame is parsed, sequenced and fanned out in the same loop
//! turn, with no second poll, no thread hand-off and no wake.

use std::io;
use std::sync::Arc;

use mio::net::TcpListener;
use mio::Token;

use super::Worker;
use crate::ingest::{IngestServer, Placement, Sink};

/// Token of the ingest listener in the worker's poll.
pub const INGEST_LISTENER: Token = Token(usize::MAX - 3);
/// Publisher `k` is registered in the worker's poll as `PUBLISHER_BASE + k`: far above any
/// session key, below the reserved tokens.
pub const PUBLISHER_BASE: usize = 1 << 62;

/// Whether a token of the worker's poll belongs to the ingest side.
pub(super) fn is_ingest(token: Token) -> bool {
    token == INGEST_LISTENER || (PUBLISHER_BASE..INGEST_LISTENER.0).contains(&token.0)
}

impl Worker {
    /// Makes this worker serve the ingest listener `listener`, passing accepted messages to
    /// `sink`.
    pub fn colocate_ingest(&mut self, listener: TcpListener, sink: Sink) -> io::Result<()> {
        let placement = Placement::Worker {
            registry: self.poll.registry().try_clone()?,
            listener: INGEST_LISTENER,
            base: PUBLISHER_BASE,
        };
        let server = IngestServer::new(placement, listener, sink, Arc::clone(&self.shared))?;
        self.shared.set_ingest_on_worker(true);
        self.ingest = Some(Box::new(server));
        Ok(())
    }

    /// Handles an event of the ingest listener or a publisher socket. Data it accepts lands
    /// in this worker's inbox, which the caller drains right after: no wake needed.
    pub(super) fn ingest_event(&mut self, token: Token) {
        let Some(server) = self.ingest.as_mut() else {
            return;
        };
        self.inbox.hold_wakes();
        server.on_token(token);
        self.inbox.rearm();
    }

    /// The ingest side's periodic work (deadlines, the publisher list), its drain when
    /// shutdown asks, and its end once the drain is over. Returns whether this worker serves
    /// publishers: the caller then drains its inbox, where the work may have put data.
    pub(super) fn ingest_turn(&mut self) -> bool {
        let Some(server) = self.ingest.as_mut() else {
            return false;
        };
        self.inbox.hold_wakes();
        server.check_drain();
        server.sweep_if_due();
        if server.finished() {
            server.report_stop();
            // The listener went at the start of the drain; dropping the server closes (and
            // so unregisters) what is left of the publishers.
            self.ingest = None;
            self.shared.set_ingest_on_worker(false);
        }
        self.inbox.rearm();
        true
    }

    /// Whether this worker still serves publishers.
    pub(super) fn serves_ingest(&self) -> bool {
        self.ingest.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_tokens_are_apart_from_sessions_and_the_workers_own() {
        assert!(is_ingest(INGEST_LISTENER));
        assert!(is_ingest(Token(PUBLISHER_BASE)));
        assert!(is_ingest(Token(PUBLISHER_BASE + 70_000)));
        for own in [
            super::super::LISTENER,
            super::super::WAKER,
            Token(0),
            Token(70_000),
        ] {
            assert!(!is_ingest(own), "{own:?}");
        }
    }
}
