//! The flush at the end of a loop turn: every dirty connection's output written, one `writev`
//! per connection, in three passes (gather, write, account), with a short path for the
//! common case of one frame written whole.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};

use log::warn;
use mio::{Interest, Token};

use super::{prefetch_ahead, Worker};
use crate::bus::FlushReport;
use crate::net::outqueue::{OutQueue, WholeFrame};
use crate::net::uring::{SendResult, Target};

/// An empty vector with `v`'s allocation, for elements of another lifetime (the flush's slices
/// borrow the sessions only for one pass; the vectors outlive it). Collecting an emptied
/// vector's iterator into a vector of a type with the same size and alignment reuses the
/// allocation, so a loop turn allocates nothing for them.
fn reuse<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// Writes each target's slices of `iov` with one call each, appending the results in order
/// (rustix makes the system calls itself, without libc's wrappers and their
/// thread-cancellation bookkeeping around each).
fn write_each(iov: &[IoSlice<'_>], targets: &[Target<'_>], results: &mut Vec<SendResult>) {
    let mut start = 0;
    for &(fd, end) in targets {
        let slices = &iov[start..end];
        start = end;
        results.push(fd.map(|fd| {
            match slices {
                [one] => rustix::net::send(fd, one, rustix::net::SendFlags::NOSIGNAL),
                _ => rustix::io::writev(fd, slices),
            }
            .map_err(io::Error::from)
        }));
    }
}

impl Worker {
    /// Writes every connection that has pending output (one send per connection when the
    /// socket takes it all), then drops connections that are finished.
    ///
    /// In three passes, so that the writes follow one another with no user-space work between
    /// them (each goes through the kernel's TCP path, which evicts the worker's code and data
    /// from the core's caches): gather every connection's frames while the fan-out has just
    /// touched them, write them all (one io_uring submission, or one call each), then account
    /// the results. The worker's counters are added to once per pass, not per connection.
    pub(super) fn flush_dirty(&mut self) -> FlushReport {
        let mut report = FlushReport::default();
        let (mut data_frames, mut syscalls) = (0u64, 0u64);
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut results = std::mem::take(&mut self.write_results);
        results.clear();
        {
            // Gather: each dirty connection's socket and the end of its slices (no socket when
            // it has no frames). The write pass then touches nothing of the sessions.
            let mut iov: Vec<IoSlice<'_>> = reuse(std::mem::take(&mut self.iov_scratch));
            let mut targets: Vec<(Option<BorrowedFd<'_>>, usize)> =
                reuse(std::mem::take(&mut self.fd_scratch));
            for &k in &dirty {
                let fd = match self.sessions.get(k).filter(|s| s.dirty) {
                    Some(s) if s.conn.out().gather(&mut iov) > 0 => Some(s.conn.sock().as_fd()),
                    _ => None,
                };
                targets.push((fd, iov.len()));
            }
            // Write: one send per connection, all of them in one io_uring submission when
            // the worker has a ring, else one call each.
            let failed = match self.ring.as_mut() {
                Some(ring) => ring.send_all(&iov, &targets, &mut results).err(),
                None => {
                    write_each(&iov, &targets, &mut results);
                    None
                }
            };
            if let Some(e) = failed {
                // Not a socket's error but the ring's (never seen so far): the connections
                // whose sends it cannot vouch for get the error and close; the worker goes on
                // with plain calls.
                warn!(
                    "worker {}: io_uring failed ({e}); plain send and writev calls from now on",
                    self.index
                );
                self.ring = None;
                self.stats.io_uring.set(0);
            }
            self.iov_scratch = reuse(iov);
            self.fd_scratch = reuse(targets);
        }
        // Account: one clock read for the pass, the latency of every frame written in it.
        let now_ns = crate::clock::mono_ns();
        for (i, (&k, first)) in dirty.iter().zip(results.drain(..)).enumerate() {
            prefetch_ahead(&self.sessions, &dirty, i, OutQueue::prefetch_front);
            let Some(s) = self.sessions.get_mut(k) else {
                continue;
            };
            if !s.dirty {
                continue;
            }
            s.dirty = false;
            if s.batch_count > 0 {
                // (`batch_bytes` is outside the session's hot lines: only touched when batching.)
                s.batch_count = 0;
                s.batch_bytes = 0;
            }
            // Short path: an open connection's one frame went out whole. Nothing is left to
            // write, so the session needs no settling; only a queue that was over its soft
            // limit, or held back by the socket, has more to do. (It repeats the accounting of
            // the general path below with constants: folded into that path through a
            // `WriteReport`, the light scenario measured 658 instructions per delivery instead
            // of 613 with cachegrind.)
            let whole = match &first {
                Some(Ok(n)) if s.conn.is_open() => s.conn.out_mut().complete_whole(*n),
                _ => None,
            };
            if let Some(frame) = whole {
                let n = first.and_then(Result::ok).unwrap_or(0) as u64;
                syscalls += 1;
                report.connections += 1;
                report.frames += 1;
                report.bytes += n;
                s.frames_out += 1;
                s.bytes_out += n;
                if let WholeFrame::Data { ingest_ns } = frame {
                    data_frames += 1;
                    s.data_written += 1;
                    // Replays and snapshots carry 0: they are old messages on purpose, not late.
                    if ingest_ns != 0 {
                        self.latency.record_ns(now_ns.saturating_sub(ingest_ns));
                    }
                }
                if s.want_write {
                    s.want_write = false;
                    let _ = self.poll.registry().reregister(
                        s.conn.socket(),
                        Token(k),
                        Interest::READABLE,
                    );
                }
                if s.over_soft_since.is_some() || s.missed.is_some() {
                    // It may queue `dropped` notices: settle schedules their write.
                    self.after_write(k);
                    self.settle(k);
                }
                continue;
            }
            let latency = &mut self.latency;
            let on_data = |t: u64| {
                if t != 0 {
                    latency.record_ns(now_ns.saturating_sub(t))
                }
            };
            let flushed = match first {
                Some(first) => s.conn.flush_after(first, on_data),
                None => s.conn.flush(on_data),
            };
            match flushed {
                Ok(r) => {
                    report.connections += 1;
                    report.frames += r.frames as u64;
                    report.bytes += r.bytes as u64;
                    data_frames += r.data_frames as u64;
                    syscalls += r.syscalls as u64;
                    s.data_written += r.data_frames as u64;
                    s.frames_out += r.frames as u64;
                    s.bytes_out += r.bytes as u64;
                    // Ask for WRITABLE only while the socket holds back output.
                    if r.drained == s.want_write {
                        s.want_write = !r.drained;
                        let interest = if r.drained {
                            Interest::READABLE
                        } else {
                            Interest::READABLE | Interest::WRITABLE
                        };
                        let _ =
                            self.poll
                                .registry()
                                .reregister(s.conn.socket(), Token(k), interest);
                    }
                    self.after_write(k);
                    self.settle(k);
                }
                Err(e) => {
                    self.stats.closed_io_error.inc();
                    s.note_close(1006, &format!("write failed: {e}"), true);
                    self.remove(k);
                }
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        self.write_results = results;
        self.stats.data_written.add(data_frames);
        self.stats.frames_written.add(report.frames);
        self.stats.bytes_written.add(report.bytes);
        self.stats.write_syscalls.add(syscalls);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_keeps_the_allocation_across_lifetimes() {
        let scratch: Vec<IoSlice<'static>> = Vec::with_capacity(64);
        let at = scratch.as_ptr() as usize;
        let buf = [1u8; 4];
        let mut iov: Vec<IoSlice<'_>> = reuse(scratch);
        iov.push(IoSlice::new(&buf));
        assert_eq!((iov.as_ptr() as usize, iov.len()), (at, 1));
        let back: Vec<IoSlice<'static>> = reuse(iov);
        assert_eq!((back.as_ptr() as usize, back.len()), (at, 0));
        assert!(back.capacity() >= 64);
    }
}
