//! A connection's output queue of shared frames, written with vectored writes.
//!
//! Frames are reference-counted [`Bytes`]: a data frame encoded once is queued on every
//! subscriber without a copy. Everything queued in one loop turn goes out in as few `writev`
//! calls as the socket allows.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 128;
/// A drained queue keeps at most this many slots of capacity.
const KEEP_SLOTS: usize = 16;

/// What one [`OutQueue::write_to`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes the socket took.
    pub bytes: usize,
    /// Frames completely written.
    pub frames: usize,
    /// `writev` calls made.
    pub syscalls: usize,
    /// Whether the queue is now empty.
    pub drained: bool,
}

/// Frames waiting to be written, oldest first.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    head_offset: usize,
    pending_bytes: usize,
}

impl OutQueue {
    /// An empty queue (allocates nothing until the first push).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a frame.
    #[inline]
    pub fn push(&mut self, frame: Bytes) {
        self.pending_bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Bytes not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Frames not yet completely written.
    pub fn pending_frames(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Writes as much as the writer takes, until the queue is empty or the writer would block.
    /// Other errors are returned (the connection is then dead).
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<WriteReport> {
        let mut report = WriteReport::default();
        while !self.frames.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, f) in self.frames.iter().take(MAX_IOV).enumerate() {
                let s = if i == 0 {
                    &f[self.head_offset..]
                } else {
                    &f[..]
                };
                iov[n] = IoSlice::new(s);
                n += 1;
            }
            report.syscalls += 1;
            match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    report.bytes += written;
                    report.frames += self.advance(written);
                }
                Err(e) if super::interrupted(&e) => continue,
                Err(e) if super::would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        report.drained = self.frames.is_empty();
        if report.drained && self.frames.capacity() > KEEP_SLOTS {
            self.frames = VecDeque::new();
        }
        Ok(report)
    }

    /// Drops `written` bytes from the front; returns how many frames completed.
    fn advance(&mut self, mut written: usize) -> usize {
        self.pending_bytes -= written;
        let mut done = 0;
        while written > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.head_offset;
            if written >= left {
                written -= left;
                self.head_offset = 0;
                self.frames.pop_front();
                done += 1;
            } else {
                self.head_offset += written;
                written = 0;
            }
        }
        // Zero-length frames at the front count as written too.
        while self.frames.front().is_some_and(|f| f.is_empty()) {
            self.frames.pop_front();
            done += 1;
        }
        done
    }

    /// Drops everything pending; returns the bytes dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.pending_bytes;
        self.frames = VecDeque::new();
        self.head_offset = 0;
        self.pending_bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `budget` bytes per call and then blocks.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let mut n = 0;
            for b in bufs {
                let take = (self.per_call - n).min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.per_call {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_in_order() {
        let mut q = OutQueue::new();
        for s in ["hello ", "shared ", "", "world"] {
            q.push(Bytes::from(s));
        }
        let mut w = Trickle {
            out: vec![],
            per_call: 4,
            calls_left: 2,
        };
        let r = q.write_to(&mut w).unwrap();
        assert_eq!((r.bytes, r.syscalls, r.drained), (8, 3, false));
        assert_eq!(q.pending_bytes(), 10);
        w.calls_left = 100;
        let r = q.write_to(&mut w).unwrap();
        assert!(r.drained);
        assert_eq!(String::from_utf8(w.out).unwrap(), "hello shared world");
        assert_eq!(q.pending_bytes(), 0);
    }

    #[test]
    fn one_writev_for_many_frames() {
        let mut q = OutQueue::new();
        for _ in 0..100 {
            q.push(Bytes::from_static(b"0123456789"));
        }
        let mut w = Trickle {
            out: vec![],
            per_call: usize::MAX / 2,
            calls_left: 1,
        };
        let r = q.write_to(&mut w).unwrap();
        assert_eq!((r.syscalls, r.frames, r.drained), (1, 100, true));
    }
}
