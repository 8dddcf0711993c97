//! A connection's output queue of shared frames, written with vectored writes.
//!
//! Frames are reference-counted [`Bytes`]: a data frame encoded once is queued on every
//! subscriber without a copy. Everything queued in one loop turn goes out in as few `writev`
//! calls as the socket allows. Each frame is tagged as control (never dropped or conflated) or
//! as data of a stream, so that backpressure policies can conflate or drop data only, and so
//! that written, conflated and dropped data frames are counted exactly.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

use crate::prefetch::{prefetch, prefetch_bytes};

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 128;
/// Slices of the small `writev` array (most turns queue a few frames per connection; building
/// the full array each call costs more than the call's user-space work).
const SMALL_IOV: usize = 8;
/// A drained queue keeps at most this many slots of capacity.
const KEEP_SLOTS: usize = 16;
/// Tag of control frames (replies, pings, pongs, closes, handshake responses).
const CONTROL: u32 = u32::MAX;

/// What one [`OutQueue::write_to`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes the socket took.
    pub bytes: usize,
    /// Frames completely written.
    pub frames: usize,
    /// Of those, data frames.
    pub data_frames: usize,
    /// `writev` calls made.
    pub syscalls: usize,
    /// Whether the queue is now empty.
    pub drained: bool,
}

/// Data frames and bytes taken out of the queue unwritten.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Data frames removed.
    pub frames: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// The frame [`OutQueue::complete_whole`] took out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WholeFrame {
    /// A control frame.
    Control,
    /// A data frame, accepted at `ingest_ns` (0 for replays and snapshots).
    Data {
        /// When the gateway accepted the message, ns on the monotonic clock.
        ingest_ns: u64,
    },
}

/// Frames waiting to be written, oldest first.
///
/// `repr(C)`: 56 bytes in this order, so that with the socket beside it (see
/// [`crate::net::conn::ConnIo`]) everything a delivery reads and writes of the queue is in one
/// cache line of the session.
#[derive(Debug, Default)]
#[repr(C)]
pub struct OutQueue {
    /// Frame, tag (stream id or [`CONTROL`]), and for data the time it was accepted.
    frames: VecDeque<(Bytes, u32, u64)>,
    /// Bytes of the front frame already written.
    head_offset: usize,
    pending_bytes: usize,
    /// Data frames queued (u32: with the bool beside it, one word).
    pending_data: u32,
    /// A data frame was queued since the last [`Self::shrink_if_idle`].
    carried_data: bool,
}

impl OutQueue {
    /// An empty queue (allocates nothing until the first push).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a control frame.
    #[inline]
    pub fn push(&mut self, frame: Bytes) {
        self.pending_bytes += frame.len();
        self.frames.push_back((frame, CONTROL, 0));
    }

    /// Appends a data frame of stream `stream`, accepted at `ingest_ns`.
    #[inline]
    pub fn push_data(&mut self, frame: Bytes, stream: u32, ingest_ns: u64) {
        debug_assert!(stream != CONTROL);
        self.pending_bytes += frame.len();
        self.pending_data += 1;
        self.carried_data = true;
        self.frames.push_back((frame, stream, ingest_ns));
    }

    /// Prefetch hint for the slot the next push writes (see [`crate::prefetch`]).
    #[inline]
    pub fn prefetch_back(&self) {
        // The slot after the last frame; in an empty queue (whose start `finish_report` resets
        // to the array's first slot), the array's first slot.
        let (a, b) = self.frames.as_slices();
        let next = if b.is_empty() { a } else { b }.as_ptr_range().end;
        prefetch_bytes(next, std::mem::size_of::<(Bytes, u32, u64)>());
    }

    /// Prefetch hint for the front slot, which the next write reads.
    #[inline]
    pub fn prefetch_front(&self) {
        if let Some(front) = self.frames.front() {
            prefetch(front);
        }
    }

    /// Bytes not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Frames not yet completely written.
    pub fn pending_frames(&self) -> usize {
        self.frames.len()
    }

    /// Data frames not yet completely written.
    pub fn pending_data(&self) -> usize {
        self.pending_data as usize
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Index of the first frame that may be removed (a partly written head must stay whole).
    fn first_removable(&self) -> usize {
        usize::from(self.head_offset > 0)
    }

    /// Removes every unwritten data frame of `stream` (conflation: the caller then queues the
    /// newest one).
    pub fn conflate(&mut self, stream: u32) -> Removed {
        self.remove_data_where(|tag| tag == stream)
    }

    /// Removes every unwritten data frame (before a slow-consumer close); control frames stay.
    pub fn drop_data(&mut self) -> Removed {
        self.remove_data_where(|tag| tag != CONTROL)
    }

    fn remove_data_where(&mut self, pred: impl Fn(u32) -> bool) -> Removed {
        let mut removed = Removed::default();
        let first = self.first_removable();
        let mut i = 0;
        self.frames.retain(|(f, tag, _)| {
            let keep = i < first || !pred(*tag);
            i += 1;
            if !keep {
                removed.frames += 1;
                removed.bytes += f.len();
            }
            keep
        });
        self.pending_bytes -= removed.bytes;
        self.pending_data -= removed.frames as u32;
        removed
    }

    /// Appends to `iov` the unwritten frames (at most [`MAX_IOV`], the first from its
    /// unwritten part), for one write that [`Self::complete_write`] then accounts. Returns how
    /// many slices it appended.
    #[inline]
    pub fn gather<'a>(&'a self, iov: &mut Vec<IoSlice<'a>>) -> usize {
        if self.frames.len() == 1 {
            // The common case (one message since the last turn), without the iterator.
            if let Some((frame, _, _)) = self.frames.front() {
                iov.push(IoSlice::new(&frame[self.head_offset..]));
                return 1;
            }
        }
        let n = self.frames.len().min(MAX_IOV);
        iov.extend(self.unwritten().take(n).map(IoSlice::new));
        n
    }

    /// The common case of accounting a write made from the slices of [`Self::gather`]: the
    /// queue held one frame and the write took all of it. Takes the frame out and says what
    /// it was; `None`, with the queue unchanged, in every other case (then
    /// [`Self::complete_write`] accounts the write).
    #[inline]
    pub fn complete_whole(&mut self, written: usize) -> Option<WholeFrame> {
        if self.frames.len() != 1 || written != self.pending_bytes {
            return None;
        }
        let (_, tag, ingest_ns) = self.frames.pop_front()?;
        self.pending_bytes = 0;
        self.head_offset = 0;
        let frame = if tag == CONTROL {
            WholeFrame::Control
        } else {
            self.pending_data -= 1;
            WholeFrame::Data { ingest_ns }
        };
        self.emptied();
        Some(frame)
    }

    /// Accounts one write made from the slices of [`Self::gather`] (its result `first`), then
    /// goes on writing to `w` as [`Self::write_to`] does until the queue is empty or `w` would
    /// block.
    pub fn complete_write<W: Write>(
        &mut self,
        first: io::Result<usize>,
        w: &mut W,
        mut on_data: impl FnMut(u64),
    ) -> io::Result<WriteReport> {
        let mut report = WriteReport {
            syscalls: 1,
            ..WriteReport::default()
        };
        match first {
            Ok(0) if !self.frames.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                report.bytes += written;
                self.advance(written, &mut report, &mut on_data);
            }
            Err(e) if super::interrupted(&e) => {}
            Err(e) if super::would_block(&e) => return Ok(self.finish_report(report)),
            Err(e) => return Err(e),
        }
        self.write_more(w, report, on_data)
    }

    /// Writes as much as the writer takes, until the queue is empty or the writer would block.
    /// Other errors are returned (the connection is then dead). `on_data` gets the accept time
    /// of every data frame written in full.
    pub fn write_to<W: Write>(
        &mut self,
        w: &mut W,
        on_data: impl FnMut(u64),
    ) -> io::Result<WriteReport> {
        self.write_more(w, WriteReport::default(), on_data)
    }

    #[inline]
    fn write_more<W: Write>(
        &mut self,
        w: &mut W,
        mut report: WriteReport,
        mut on_data: impl FnMut(u64),
    ) -> io::Result<WriteReport> {
        while !self.frames.is_empty() {
            report.syscalls += 1;
            let result = if self.frames.len() == 1 {
                w.write(&self.frames[0].0[self.head_offset..])
            } else if self.frames.len() <= SMALL_IOV {
                let mut iov = [IoSlice::new(&[]); SMALL_IOV];
                let n = self.fill_iov(&mut iov);
                w.write_vectored(&iov[..n])
            } else {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let n = self.fill_iov(&mut iov);
                w.write_vectored(&iov[..n])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    report.bytes += written;
                    self.advance(written, &mut report, &mut on_data);
                }
                Err(e) if super::interrupted(&e) => continue,
                Err(e) if super::would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.finish_report(report))
    }

    /// Sets `drained`. Once the queue is empty, it gives back a large slot array, or one that
    /// carried only control frames since the last [`Self::shrink_if_idle`] (a handshake
    /// response, a reply, a pong: freed at once, so the next connection's allocations reuse the
    /// memory, instead of thousands of new connections each leaving a freed array behind in the
    /// heap); a connection that gets data keeps its array and starts the next frame at its
    /// first slot (`clear` resets the start: one frame at a time then only ever touches that
    /// slot's cache line).
    #[inline]
    fn finish_report(&mut self, mut report: WriteReport) -> WriteReport {
        report.drained = self.frames.is_empty();
        if report.drained {
            self.emptied();
        }
        report
    }

    /// For a queue just emptied: keeps or gives back its slot array (see
    /// [`Self::finish_report`]).
    #[inline]
    fn emptied(&mut self) {
        if self.frames.capacity() > KEEP_SLOTS || !self.carried_data {
            self.frames = VecDeque::new();
        } else {
            self.frames.clear();
        }
    }

    /// Points `iov` at the first frames (the first from its unwritten part); returns how many.
    fn fill_iov<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, bytes) in iov.iter_mut().zip(self.unwritten()) {
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// The unwritten bytes of each frame, oldest first (the first from its unwritten part).
    fn unwritten(&self) -> impl Iterator<Item = &[u8]> {
        let head = self.head_offset;
        self.frames
            .iter()
            .enumerate()
            .map(move |(i, (f, _, _))| if i == 0 { &f[head..] } else { &f[..] })
    }

    /// Drops `written` bytes from the front, counting completed frames into `report`.
    fn advance(
        &mut self,
        mut written: usize,
        report: &mut WriteReport,
        on_data: &mut impl FnMut(u64),
    ) {
        self.pending_bytes -= written;
        while let Some((front, tag, ingest_ns)) = self.frames.front() {
            let left = front.len() - self.head_offset;
            if written < left {
                self.head_offset += written;
                break;
            }
            written -= left;
            if *tag != CONTROL {
                self.pending_data -= 1;
                report.data_frames += 1;
                on_data(*ingest_ns);
            }
            report.frames += 1;
            self.head_offset = 0;
            self.frames.pop_front();
        }
    }

    /// Frees the slot array of an empty queue that no data frame was queued on since the last
    /// call (idle connections then cost no queue memory, while a connection that gets data
    /// every tick keeps its array instead of reallocating it each time).
    pub fn shrink_if_idle(&mut self) {
        if !std::mem::take(&mut self.carried_data)
            && self.frames.is_empty()
            && self.frames.capacity() > 0
        {
            self.frames = VecDeque::new();
        }
    }

    /// Drops everything pending; returns the data frames and bytes dropped.
    pub fn clear(&mut self) -> Removed {
        let removed = Removed {
            frames: self.pending_data as usize,
            bytes: self.pending_bytes,
        };
        self.frames = VecDeque::new();
        self.head_offset = 0;
        self.pending_bytes = 0;
        self.pending_data = 0;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `per_call` bytes per call, `calls_left` times, then blocks.
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
        q.push(Bytes::from("hello "));
        q.push_data(Bytes::from("shared "), 1, 0);
        q.push(Bytes::from(""));
        q.push_data(Bytes::from("world"), 2, 0);
        let mut w = Trickle {
            out: vec![],
            per_call: 4,
            calls_left: 2,
        };
        let r = q.write_to(&mut w, |_| {}).unwrap();
        assert_eq!((r.bytes, r.syscalls, r.drained, r.frames), (8, 3, false, 1));
        assert_eq!(q.pending_bytes(), 10);
        w.calls_left = 100;
        let r = q.write_to(&mut w, |_| {}).unwrap();
        assert!(r.drained);
        assert_eq!((r.frames, r.data_frames), (3, 2));
        assert_eq!(String::from_utf8(w.out).unwrap(), "hello shared world");
        assert_eq!((q.pending_bytes(), q.pending_data()), (0, 0));
    }

    #[test]
    fn one_frame_written_whole_takes_the_short_path() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"abcd"), 3, 42);
        let mut iov = Vec::new();
        assert_eq!(q.gather(&mut iov), 1);
        assert_eq!(&*iov[0], b"abcd");
        drop(iov);
        // A short write is not whole: the queue is left for `complete_write`.
        assert_eq!(q.complete_whole(3), None);
        assert_eq!((q.pending_frames(), q.pending_bytes()), (1, 4));
        assert_eq!(
            q.complete_whole(4),
            Some(WholeFrame::Data { ingest_ns: 42 })
        );
        assert_eq!(
            (q.pending_frames(), q.pending_bytes(), q.pending_data()),
            (0, 0, 0)
        );
        // A control frame, and a queue of two frames, which never takes the short path.
        q.push(Bytes::from_static(b"pong"));
        assert_eq!(q.complete_whole(4), Some(WholeFrame::Control));
        q.push(Bytes::from_static(b"ab"));
        q.push_data(Bytes::from_static(b"cd"), 1, 7);
        assert_eq!(q.complete_whole(4), None);
        assert_eq!(
            (q.pending_frames(), q.pending_bytes(), q.pending_data()),
            (2, 4, 1)
        );
        // The rest of a partly written frame is whole once written.
        let mut w = Trickle {
            out: vec![],
            per_call: 3,
            calls_left: 1,
        };
        let r = q.write_to(&mut w, |_| {}).unwrap();
        assert_eq!((r.frames, q.pending_frames(), q.pending_bytes()), (1, 1, 1));
        let mut iov = Vec::new();
        assert_eq!(q.gather(&mut iov), 1);
        assert_eq!(&*iov[0], b"d");
        drop(iov);
        assert_eq!(q.complete_whole(1), Some(WholeFrame::Data { ingest_ns: 7 }));
        assert!(q.is_empty());
    }

    #[test]
    fn gathered_write_is_accounted_then_continued() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"abc"), 1, 7);
        q.push(Bytes::from_static(b"de"));
        q.push_data(Bytes::from_static(b"fgh"), 2, 9);
        let mut iov = Vec::new();
        assert_eq!(q.gather(&mut iov), 3);
        let lens: Vec<usize> = iov.iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![3, 2, 3]);
        drop(iov);
        // The outside write took 4 bytes; the rest goes to the writer, 2 bytes a call.
        let mut w = Trickle {
            out: vec![],
            per_call: 2,
            calls_left: 1,
        };
        let mut accepted = Vec::new();
        let r = q
            .complete_write(Ok(4), &mut w, |t| accepted.push(t))
            .unwrap();
        // Three calls: the outside one, the one that took 2 bytes, the one that would block.
        assert_eq!((r.bytes, r.frames, r.data_frames, r.syscalls), (6, 2, 1, 3));
        assert!(!r.drained);
        assert_eq!(accepted, vec![7]);
        assert_eq!(w.out, b"ef");
        // The next gather starts inside the partly written frame.
        let mut iov = Vec::new();
        assert_eq!(q.gather(&mut iov), 1);
        assert_eq!(&iov[0][..], b"gh");
        drop(iov);
        let r = q
            .complete_write(Ok(2), &mut w, |t| accepted.push(t))
            .unwrap();
        assert!(r.drained);
        assert_eq!(accepted, vec![7, 9]);
        assert_eq!((q.pending_bytes(), q.pending_data()), (0, 0));
    }

    #[test]
    fn gathered_write_that_blocked_or_failed() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"abc"), 1, 0);
        let mut w = Trickle {
            out: vec![],
            per_call: 100,
            calls_left: 5,
        };
        // Would block: nothing more is tried, the frame stays.
        let r = q
            .complete_write(Err(io::ErrorKind::WouldBlock.into()), &mut w, |_| {})
            .unwrap();
        assert_eq!((r.bytes, r.syscalls, r.drained), (0, 1, false));
        assert!(w.out.is_empty());
        // Interrupted: the writer is tried at once.
        let r = q
            .complete_write(Err(io::ErrorKind::Interrupted.into()), &mut w, |_| {})
            .unwrap();
        assert!(r.drained);
        assert_eq!(w.out, b"abc");
        // A zero-byte write with frames pending, or a real error, ends the connection.
        q.push(Bytes::from_static(b"x"));
        assert!(q.complete_write(Ok(0), &mut w, |_| {}).is_err());
        let e = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(q.complete_write(Err(e), &mut w, |_| {}).is_err());
    }

    #[test]
    fn one_writev_for_many_frames() {
        let mut q = OutQueue::new();
        for _ in 0..100 {
            q.push_data(Bytes::from_static(b"0123456789"), 0, 0);
        }
        let mut w = Trickle {
            out: vec![],
            per_call: usize::MAX / 2,
            calls_left: 1,
        };
        let r = q.write_to(&mut w, |_| {}).unwrap();
        assert_eq!(
            (r.syscalls, r.frames, r.data_frames, r.drained),
            (1, 100, 100, true)
        );
    }

    #[test]
    fn conflate_and_drop_keep_control_frames_and_a_started_head() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"A1"), 1, 0);
        q.push(Bytes::from_static(b"pong"));
        q.push_data(Bytes::from_static(b"A2"), 1, 0);
        q.push_data(Bytes::from_static(b"B1"), 2, 0);
        // Start writing the head: it may not be removed any more.
        let mut w = Trickle {
            out: vec![],
            per_call: 1,
            calls_left: 1,
        };
        q.write_to(&mut w, |_| {}).unwrap();
        assert_eq!(
            q.conflate(1),
            Removed {
                frames: 1,
                bytes: 2
            }
        );
        q.push_data(Bytes::from_static(b"A3"), 1, 0);
        assert_eq!(q.pending_data(), 3);
        assert_eq!(
            q.drop_data(),
            Removed {
                frames: 2,
                bytes: 4
            }
        );
        assert_eq!((q.pending_data(), q.pending_frames()), (1, 2));
        w.calls_left = 10;
        w.per_call = 100;
        let r = q.write_to(&mut w, |_| {}).unwrap();
        assert_eq!((r.data_frames, r.frames), (1, 2));
        assert_eq!(w.out, b"A1pong");
    }

    #[test]
    fn control_only_queue_frees_its_array_when_drained() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"HTTP/1.1 101 Switching Protocols"));
        let mut sink = Vec::new();
        assert!(q.write_to(&mut sink, |_| {}).unwrap().drained);
        assert_eq!(q.frames.capacity(), 0);
    }

    #[test]
    fn shrink_frees_only_after_an_idle_interval() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"x"), 1, 0);
        let mut sink = Vec::new();
        q.write_to(&mut sink, |_| {}).unwrap();
        assert!(q.frames.capacity() > 0);
        // Used since the last tick: kept.
        q.shrink_if_idle();
        assert!(q.frames.capacity() > 0);
        // Nothing queued for a whole interval: freed.
        q.shrink_if_idle();
        assert_eq!(q.frames.capacity(), 0);
    }
}
