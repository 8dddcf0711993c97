//! Batched socket writes through io_uring: a flush's sends, one per connection, submitted to the
//! kernel with one `io_uring_enter` instead of one `send` or `writev` each. The results are the
//! same as the plain calls' (bytes written, `WouldBlock` on a full socket, the error), so the
//! caller accounts for both alike. Where the kernel refuses a ring (io_uring disabled by
//! sysctl, a seccomp filter, an old kernel) the caller writes with plain calls.
//!
//! Long-lived sockets are registered with the ring (a table of "fixed files", one slot per
//! connection), so a send names its socket by slot and the kernel takes no reference on the
//! socket's file for it (an `fget`/`fput` pair per send otherwise). A registered slot holds
//! the socket open: the owner must [`SendRing::forget`] it when the connection goes.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};
use log::warn;

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
    /// The kernel's table of registered sockets as this side knows it: the owner of the
    /// socket in each slot, 0 for none; empty without a table.
    /// Allocated zeroed, so only the pages of slots in use become resident (8 bytes a
    /// connection).
    registered: Vec<u64>,
    /// Whether new sockets are registered (cleared after the kernel refused one: the slots
    /// already registered stay in use until forgotten).
    registering: bool,
}

impl std::fmt::Debug for SendRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRing")
            .field("entries", &self.chunk)
            .field("file_slots", &self.registered.len())
            .finish()
    }
}

/// A connection's slot in the ring's table of registered sockets, and who owns it: a slot
/// freed by one connection and taken by another is registered again for the new socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSlot {
    /// The slot (the connection's key in its worker).
    pub index: usize,
    /// The connection's id, unique for the worker's life and never 0.
    pub owner: u64,
}

/// One target of a flush.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Its socket; none when it has nothing to write.
    pub fd: Option<BorrowedFd<'a>>,
    /// The end of its slices in the flush's slice list (each target's slices start where the
    /// previous one's end).
    pub end: usize,
    /// Its slot for a send by registered file; none to name the socket by descriptor (a
    /// short-lived connection, not worth the two system calls of registering and forgetting).
    pub slot: Option<FileSlot>,
}

/// The result of one target's write: `None` when it had no socket, else what the send returned.
pub type SendResult = Option<io::Result<usize>>;

impl SendRing {
    /// A ring for up to `entries` sends per submission with a table of `file_slots`
    /// registered sockets, or the kernel's refusal of a ring. A kernel that gives the ring but
    /// no table (before Linux 5.19, or more slots than `RLIMIT_NOFILE`) leaves every send to
    /// name its socket by descriptor.
    pub fn new(entries: u32, file_slots: usize) -> io::Result<Self> {
        let ring = IoUring::new(entries)?;
        let chunk = ring.params().sq_entries() as usize;
        let slots = match u32::try_from(file_slots) {
            Ok(0) | Err(_) => 0,
            Ok(n) => match ring.submitter().register_files_sparse(n) {
                Ok(()) => file_slots,
                Err(e) => {
                    warn!("io_uring: no table of {n} sockets ({e}): every send by descriptor");
                    0
                }
            },
        };
        Ok(SendRing {
            ring,
            chunk,
            headers: Vec::new(),
            registered: vec![0; slots],
            registering: slots > 0,
        })
    }

    /// Slots in the ring's table of registered sockets (0 without one).
    pub fn file_slots(&self) -> usize {
        self.registered.len()
    }

    /// Registers `fd` in `slot` unless it is there already. On the kernel's refusal the slot
    /// stays empty (the send goes by descriptor) and no more sockets are registered.
    fn register(&mut self, fd: RawFd, slot: FileSlot) {
        if !self.registering || slot.owner == 0 {
            return;
        }
        let Some(held) = self.registered.get_mut(slot.index) else {
            return;
        };
        if *held == slot.owner {
            return;
        }
        // u32: the table's length came from a u32.
        match self
            .ring
            .submitter()
            .register_files_update(slot.index as u32, &[fd])
        {
            Ok(_) => *held = slot.owner,
            Err(e) => {
                *held = 0;
                self.registering = false;
                warn!("io_uring: registering a socket failed ({e}): new sockets by descriptor");
            }
        }
    }

    /// Empties `slot` if `slot.owner` holds it, so that the ring no longer holds its socket
    /// open: to call when the connection goes (its socket's last descriptor closing does not
    /// close a socket the ring holds). On an error the ring still holds the socket, and the
    /// caller should drop the ring, which releases every socket it holds.
    pub fn forget(&mut self, slot: FileSlot) -> io::Result<()> {
        let Some(held) = self.registered.get_mut(slot.index) else {
            return Ok(());
        };
        if *held != slot.owner || slot.owner == 0 {
            return Ok(());
        }
        *held = 0;
        self.ring
            .submitter()
            .register_files_update(slot.index as u32, &[-1])
            .map(drop)
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
            // Sockets new to their slots are registered before the chunk is queued (a
            // system call each, once per connection).
            for t in &targets[first..last] {
                if let (Some(fd), Some(slot)) = (t.fd, t.slot) {
                    self.register(fd.as_raw_fd(), slot);
                }
            }
            let mut pending = 0;
            {
                let mut sq = self.ring.submission();
                for (i, t) in targets[first..last].iter().enumerate() {
                    let slices = &iov[start..t.end];
                    start = t.end;
                    let Some(fd) = t.fd else { continue };
                    // By slot when the socket is registered there (the kernel then reads the
                    // entry's descriptor as a slot), else by descriptor.
                    let fixed = t
                        .slot
                        .filter(|s| s.owner != 0 && self.registered.get(s.index) == Some(&s.owner));
                    let (fd, flags) = match fixed {
                        Some(s) => (types::Fd(s.index as i32), squeue::Flags::FIXED_FILE),
                        None => (types::Fd(fd.as_raw_fd()), squeue::Flags::empty()),
                    };
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
                    .flags(flags)
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
                        for (r, t) in rest.zip(&targets[first..]) {
                            if r.is_none() && t.fd.is_some() {
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

    /// A ring of `entries` with `slots` registered sockets, or none where the system refuses
    /// io_uring (said on stderr).
    fn ring(entries: u32, slots: usize) -> Option<SendRing> {
        match SendRing::new(entries, slots) {
            Ok(ring) => Some(ring),
            Err(e) if refused(&e) => {
                eprintln!("io_uring refused here ({e}): only the plain writes are tested");
                None
            }
            Err(e) => panic!("no ring: {e}"),
        }
    }

    fn by_fd(fd: Option<BorrowedFd<'_>>, end: usize) -> Target<'_> {
        Target {
            fd,
            end,
            slot: None,
        }
    }

    fn by_slot(fd: BorrowedFd<'_>, end: usize, index: usize, owner: u64) -> Target<'_> {
        Target {
            fd: Some(fd),
            end,
            slot: Some(FileSlot { index, owner }),
        }
    }

    /// What `send_all` returned for each target, errors by kind.
    fn sent(ring: &mut SendRing, iov: &[IoSlice<'_>], targets: &[Target<'_>]) -> Vec<SendSum> {
        let mut results = Vec::new();
        ring.send_all(iov, targets, &mut results).unwrap();
        results
            .into_iter()
            .map(|r| r.map(|r| r.map_err(|e| e.kind())))
            .collect()
    }

    type SendSum = Option<Result<usize, io::ErrorKind>>;

    /// Reads what `peer` has within a second, up to `n` bytes; "EOF" appended if it closed.
    fn read_some(peer: &mut std::net::TcpStream, n: usize) -> String {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match peer.read(&mut buf[got..]) {
                Ok(0) => return String::from_utf8_lossy(&buf[..got]).into_owned() + "EOF",
                Ok(k) => got += k,
                // The ring's task work (releasing a socket) may interrupt a wait with a timeout.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        String::from_utf8_lossy(&buf[..got]).into_owned()
    }

    #[test]
    fn registered_sockets_get_their_own_data_and_close_once_forgotten() {
        let Some(mut ring) = ring(4, 2) else { return };
        if ring.file_slots() == 0 {
            eprintln!("no registered files on this kernel: only sends by descriptor are tested");
            return;
        }
        let ((a, mut a_peer), (b, mut b_peer), (c, mut c_peer)) = (pair(), pair(), pair());
        let iov = [
            IoSlice::new(b"to-a"),
            IoSlice::new(b"to-b"),
            IoSlice::new(b"to-c"),
        ];
        // a in slot 0, b in slot 1, c with a slot out of the table's range (by descriptor).
        let targets = [
            by_slot(a.as_fd(), 1, 0, 7),
            by_slot(b.as_fd(), 2, 1, 8),
            by_slot(c.as_fd(), 3, 5, 9),
        ];
        assert_eq!(sent(&mut ring, &iov, &targets), vec![Some(Ok(4)); 3]);
        assert_eq!(ring.registered, [7, 8]);
        // Again: the slots are reused as they are, no new registration.
        assert_eq!(sent(&mut ring, &iov, &targets), vec![Some(Ok(4)); 3]);
        assert_eq!(
            (read_some(&mut a_peer, 8), read_some(&mut b_peer, 8)),
            ("to-ato-a".into(), "to-bto-b".into())
        );
        assert_eq!(read_some(&mut c_peer, 8), "to-cto-c");
        // `a` goes: its descriptor closes, but the ring holds the socket until forgotten.
        // Forgetting with a stale owner leaves the slot.
        drop(a);
        ring.forget(FileSlot {
            index: 0,
            owner: 99,
        })
        .unwrap();
        assert_eq!(ring.registered[0], 7);
        ring.forget(FileSlot { index: 0, owner: 7 }).unwrap();
        assert_eq!(read_some(&mut a_peer, 1), "EOF");
        // Slot 0 taken by `c` (a new owner): `c` is registered there and gets the data, and
        // `b`, in slot 1 still, is untouched.
        let targets = [by_slot(c.as_fd(), 1, 0, 10), by_slot(b.as_fd(), 2, 1, 8)];
        let iov = [IoSlice::new(b"new-c"), IoSlice::new(b"b")];
        assert_eq!(
            sent(&mut ring, &iov, &targets),
            vec![Some(Ok(5)), Some(Ok(1))]
        );
        assert_eq!(ring.registered, [10, 8]);
        assert_eq!(
            (read_some(&mut c_peer, 5), read_some(&mut b_peer, 1)),
            ("new-c".into(), "b".into())
        );
        // A slot taken by a new owner without the old one forgotten is replaced too (the
        // kernel drops its reference on the old socket): `b` closes once its descriptor is.
        drop(b);
        let targets = [by_slot(c.as_fd(), 1, 1, 11)];
        assert_eq!(sent(&mut ring, &iov[..1], &targets), vec![Some(Ok(5))]);
        assert_eq!(read_some(&mut b_peer, 1), "EOF");
        // Dropping the ring releases every socket it holds.
        drop(c);
        drop(ring);
        assert_eq!(read_some(&mut c_peer, 10), "new-cEOF");
    }

    #[test]
    fn sends_every_target_in_order_and_reports_a_full_socket() {
        let Some(mut ring) = ring(2, 0) else { return };
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
            by_fd(Some(a.as_fd()), 1),
            by_fd(Some(b.as_fd()), 3),
            by_fd(None, 3),
            by_fd(Some(full.as_fd()), 4),
            by_fd(Some(a.as_fd()), 4),
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
