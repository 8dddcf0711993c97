//! Batched socket writes through io_uring: a flush's sends, one per connection, submitted to the
//! kernel with one `io_uring_enter` instead of one `send` or `writev` each. The results are the
//! same as the plain calls' (bytes written, `WouldBlock` on a full socket, the error), so the
//! caller accounts for both alike. Where the kernel refuses a ring (io_uring disabled by
//! sysctl, a seccomp filter, an old kernel) the caller writes with plain calls.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{opcode, types, IoUring};

/// Flags of every send: never block (a full socket answers `EAGAIN` at once, as a plain
/// non-blocking `send` does; without it io_uring would wait for room), never raise `SIGPIPE`.
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// One `msghdr` for a send of several slices. It holds pointers only while its send is in
/// flight, inside [`SendRing::send_all`].
#[repr(transparent)]
struct MsgHdr(libc::msghdr);

// SAFETY: a `MsgHdr` is plain data; its pointers are written and read by the kernel only
// during one `send_all` call on the thread that owns the ring, and are stale (never
// dereferenced) between calls, so moving it to another thread is sound.
unsafe impl Send for MsgHdr {}

/// A worker's ring for its flush's writes.
pub struct SendRing {
    ring: IoUring,
    /// Sends per submission (the submission queue's size).
    chunk: usize,
    /// Headers of the sends with several slices, by position in the current chunk (grown to
    /// the largest chunk seen, before any of its entries is queued).
    headers: Vec<MsgHdr>,
}

impl std::fmt::Debug for SendRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRing")
            .field("entries", &self.chunk)
            .finish()
    }
}

/// One target of a flush: its socket (none when it has nothing to write) and the end of its
/// slices in the flush's slice list (each target's slices start where the previous one's end).
pub type Target<'a> = (Option<BorrowedFd<'a>>, usize);

/// The result of one target's write: `None` when it had no socket, else what the send returned.
pub type SendResult = Option<io::Result<usize>>;

impl SendRing {
    /// A ring for up to `entries` sends per submission, or the kernel's refusal.
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = IoUring::new(entries)?;
        let chunk = ring.params().sq_entries() as usize;
        Ok(SendRing {
            ring,
            chunk,
            headers: Vec::new(),
        })
    }

    /// Writes each target's slices of `iov` (one send per target) and appends each target's
    /// result to `results`, in the order of `targets`. An error of the ring itself (not of a
    /// socket) ends the call and the caller should drop the ring. If submitting failed, every
    /// target from the failed chunk on that has no result yet gets that error (whether its
    /// send reached the kernel is not known); if queueing failed, nothing of the chunk was
    /// submitted and its targets are left `None`, for the caller to write with a plain call.
    pub fn send_all(
        &mut self,
        iov: &[IoSlice<'_>],
        targets: &[Target<'_>],
        results: &mut Vec<SendResult>,
    ) -> io::Result<()> {
        let base = results.len();
        results.extend(targets.iter().map(|_| None));
        let mut start = 0;
        let mut first = 0;
        while first < targets.len() {
            let last = (first + self.chunk).min(targets.len());
            if self.headers.len() < last - first {
                // SAFETY: `msghdr` is a C struct of integers and pointers, for which all
                // zeroes is a valid (empty) value.
                self.headers
                    .resize_with(last - first, || MsgHdr(unsafe { std::mem::zeroed() }));
            }
            let mut pending = 0;
            {
                let mut sq = self.ring.submission();
                for (i, &(fd, end)) in targets[first..last].iter().enumerate() {
                    let slices = &iov[start..end];
                    start = end;
                    let Some(fd) = fd else { continue };
                    let fd = types::Fd(fd.as_raw_fd());
                    let entry = match slices {
                        [one] => opcode::Send::new(fd, one.as_ptr(), one.len() as u32)
                            .flags(SEND_FLAGS)
                            .build(),
                        _ => {
                            let h = &mut self.headers[i].0;
                            // `IoSlice` is ABI-compatible with `iovec` on Unix.
                            h.msg_iov = slices.as_ptr() as *mut libc::iovec;
                            h.msg_iovlen = slices.len() as _;
                            opcode::SendMsg::new(fd, h).flags(SEND_FLAGS as u32).build()
                        }
                    }
                    .user_data((first + i) as u64);
                    // SAFETY: the entry points into `iov`'s buffers and `self.headers` and
                    // names a socket the caller keeps open; all of them outlive the send, as
                    // this call returns only once every entry it submitted has completed
                    // (below), and none is touched until then. The queue has room: a chunk
                    // is at most its size, and the previous chunk's entries were all
                    // submitted and completed. (If it had none, the entries pushed so far
                    // were never submitted, and their targets are left to plain writes.)
                    if unsafe { sq.push(&entry) }.is_err() {
                        return Err(io::Error::other("io_uring submission queue full"));
                    }
                    pending += 1;
                }
            }
            let mut done = 0;
            while done < pending {
                match self.ring.submit_and_wait(pending - done) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Sends with MSG_DONTWAIT complete within the submission, so none is
                        // left in flight; the ones still queued were never seen by the kernel
                        // and go with the ring, which the caller drops.
                        self.harvest(base, results);
                        let rest = results[base + first..].iter_mut();
                        for (r, (fd, _)) in rest.zip(&targets[first..]) {
                            if r.is_none() && fd.is_some() {
                                *r = Some(Err(io::Error::new(e.kind(), e.to_string())));
                            }
                        }
                        return Err(e);
                    }
                }
                done += self.harvest(base, results);
            }
            first = last;
        }
        Ok(())
    }

    /// Moves the completions into `results`; returns how many there were.
    fn harvest(&mut self, base: usize, results: &mut [SendResult]) -> usize {
        let mut n = 0;
        for cqe in self.ring.completion() {
            let r = cqe.result();
            let result = if r >= 0 {
                Ok(r as usize)
            } else {
                Err(io::Error::from_raw_os_error(-r))
            };
            if let Some(slot) = results.get_mut(base + cqe.user_data() as usize) {
                *slot = Some(result);
            }
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_pair as pair;
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    /// Whether a ring could not be made because the system forbids io_uring (the sysctl
    /// `kernel.io_uring_disabled`, a seccomp filter: `EPERM`, `EACCES`), lacks it (`ENOSYS`)
    /// or will not lock its memory (`ENOMEM` under a small `RLIMIT_MEMLOCK` before Linux
    /// 5.12), as opposed to a mistake of ours (`EINVAL` for a bad size, say), which fails
    /// the test.
    fn refused(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::EACCES | libc::ENOSYS | libc::ENOMEM)
        )
    }

    #[test]
    fn sends_every_target_in_order_and_reports_a_full_socket() {
        let mut ring = match SendRing::new(2) {
            Ok(ring) => ring,
            Err(e) if refused(&e) => {
                eprintln!("io_uring refused here ({e}): only the plain writes are tested");
                return;
            }
            Err(e) => panic!("no ring: {e}"),
        };
        let ((a, mut a_peer), (b, mut b_peer), (full, _full_peer)) = (pair(), pair(), pair());
        // Fill one socket with plain writes until it would block.
        let chunk = vec![0u8; 1 << 16];
        while rustix::net::send(&full, &chunk, rustix::net::SendFlags::DONTWAIT).is_ok() {}
        let (x, y, z) = (b"one".as_slice(), b"two".as_slice(), b"three".as_slice());
        let iov = [
            IoSlice::new(x),
            IoSlice::new(y),
            IoSlice::new(z),
            IoSlice::new(x),
        ];
        // Five targets over a ring of two: three submissions. `a` gets one slice, `b` two,
        // the fourth has nothing, the full socket one.
        let targets = [
            (Some(a.as_fd()), 1),
            (Some(b.as_fd()), 3),
            (None, 3),
            (Some(full.as_fd()), 4),
            (Some(a.as_fd()), 4),
        ];
        let mut results = vec![None]; // results are appended after what is there
        ring.send_all(&iov, &targets, &mut results).unwrap();
        let got: Vec<Option<Result<usize, io::ErrorKind>>> = results
            .into_iter()
            .map(|r| r.map(|r| r.map_err(|e| e.kind())))
            .collect();
        assert_eq!(
            got,
            vec![
                None,
                Some(Ok(3)),
                Some(Ok(8)),
                None,
                Some(Err(io::ErrorKind::WouldBlock)),
                Some(Ok(0)),
            ]
        );
        drop((a, b));
        let (mut sa, mut sb) = (String::new(), String::new());
        a_peer.read_to_string(&mut sa).unwrap();
        b_peer.read_to_string(&mut sb).unwrap();
        assert_eq!((sa.as_str(), sb.as_str()), ("one", "twothree"));
    }
}
