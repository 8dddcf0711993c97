//! A worker that serves the ingest listener itself (`server.ingest_placement`, by default with
//! one worker): the ingest poll is registered in the worker's poll, and a publisher's frame is
//! parsed, sequenced and fanned out in the same loop turn, with no thread hand-off and no wake.

use std::io;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use super::Worker;
use crate::ingest::IngestServer;

/// Token of the ingest poll inside the worker's poll.
pub const INGEST: Token = Token(usize::MAX - 3);
/// Events handled per ingest pass.
const INGEST_EVENTS: usize = 256;

/// The ingest server a worker runs.
pub(super) struct Colocated {
    server: IngestServer,
    events: Events,
}

impl Worker {
    /// Makes this worker serve `server`'s listener and publishers.
    pub fn colocate_ingest(&mut self, server: IngestServer) -> io::Result<()> {
        let fd = server.poll_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), INGEST, Interest::READABLE)?;
        self.shared.set_ingest_on_worker(true);
        self.ingest = Some(Box::new(Colocated {
            server,
            events: Events::with_capacity(INGEST_EVENTS),
        }));
        Ok(())
    }

    /// Runs ingest passes until its poll has nothing ready (the worker's registration of it is
    /// edge-triggered), starts its drain when shutdown asks, and drops it once its drain is over.
    /// Returns whether it ran (this worker serves publishers): the caller then drains its
    /// inbox, where the pass may have put data.
    pub(super) fn ingest_turn(&mut self) -> bool {
        let Some(c) = self.ingest.as_mut() else {
            return false;
        };
        c.server.check_drain();
        // Data dispatched during the pass is drained right after it: no wake needed.
        self.inbox.hold_wakes();
        let mut alive = true;
        loop {
            if !c.server.turn(&mut c.events, Some(Duration::ZERO)) {
                alive = false;
                break;
            }
            if c.events.iter().count() < INGEST_EVENTS {
                break;
            }
        }
        if !alive || c.server.finished() {
            c.server.report_stop();
            let fd = c.server.poll_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
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
