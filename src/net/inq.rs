//! Reads that say what is left: `TCP_INQ`, with which every `recvmsg` on a TCP socket reports
//! the bytes still queued after it, so that an edge-triggered reader can stop at an empty
//! socket without the extra `recv` that only returns `EAGAIN`.
//!
//! Why this is safe where stopping at a short read was not taken to be (docs/architecture.md,
//! "The worker loop"): the kernel computes the count after the call has released the socket,
//! so it includes what arrived while the call held it (the backlog, queued at the release),
//! and anything that arrives later is queued with a readiness wake-up, which an
//! edge-triggered poll reports. After the peer's end of stream the count is never 0, so the
//! reader goes on to the 0-byte read.

use std::io;
use std::os::fd::AsRawFd;

/// Room for one control message carrying an `int` (`CMSG_SPACE(4)` is 24 bytes on 64-bit
/// Linux), in `u64`s for the alignment a `cmsghdr` needs.
const CONTROL_WORDS: usize = 4;

/// Asks the kernel to report the bytes left queued with every `recvmsg` on `sock`.
pub fn enable(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live `c_int` and the length passed is its size; the kernel only
    // reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INQ,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One non-blocking read into `buf`: the bytes read and, when the kernel said (the socket has
/// [`enable`]d it), the bytes still queued after it.
pub fn recv(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Option<usize>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: `msghdr` is a C struct of integers and pointers, for which all zeroes is a
    // valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (which points into `buf`, of `buf.len()` writable bytes)
    // and at `control`, of the length given; all of them live through the call, and the
    // kernel writes no further than those lengths.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut left = None;
    if msg.msg_flags & libc::MSG_CTRUNC == 0 {
        // SAFETY: the kernel set `msg_controllen` to the bytes of control messages it wrote
        // into `control`; `CMSG_FIRSTHDR` and `CMSG_NXTHDR` stay inside that length, and a
        // header they return is inside `control`, aligned for `cmsghdr` (`u64` words).
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is a header inside `control` (above).
            let h = unsafe { &*cmsg };
            if h.cmsg_level == libc::SOL_TCP && h.cmsg_type == libc::TCP_CM_INQ {
                // SAFETY: a `TCP_CM_INQ` message carries one `int` (the kernel's
                // `put_cmsg` of `msg_inq`), inside `control`; it may be unaligned.
                let inq = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>()) };
                left = Some(inq.max(0) as usize);
            }
            // SAFETY: as for `CMSG_FIRSTHDR`.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
    }
    Ok((n as usize, left))
}

#[cfg(test)]
mod tests {
    use super::super::test_pair as pair;
    use super::*;
    use std::io::Write;

    #[test]
    fn reports_what_is_left_and_the_end_of_stream() {
        let (rx, mut tx) = pair();
        enable(&rx).unwrap();
        tx.write_all(&[7u8; 100]).unwrap();
        let mut buf = [0u8; 30];
        // Wait for all 100 bytes to be queued (loopback, but not necessarily at once).
        let mut got = 0;
        let mut last = None;
        while got < 100 {
            match recv(&rx, &mut buf) {
                Ok((n, left)) => {
                    got += n;
                    last = left;
                    assert!(left.is_some(), "TCP_INQ enabled, so every read says");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(last, Some(0), "all read: nothing left");
        // Nothing queued: `EAGAIN`, as a plain read.
        let e = recv(&rx, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // A partial read reports the rest.
        tx.write_all(&[1u8; 50]).unwrap();
        let (n, left) = loop {
            match recv(&rx, &mut buf) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(n + left.unwrap(), 50);
        while recv(&rx, &mut buf).map(|(n, _)| n).unwrap_or(0) > 0 {}
        // After the peer's end of stream the count stays above 0 until the 0-byte read.
        drop(tx);
        let mut saw_eof = false;
        for _ in 0..10_000 {
            match recv(&rx, &mut buf) {
                Ok((0, _)) => {
                    saw_eof = true;
                    break;
                }
                Ok((_, left)) => assert_ne!(left, Some(0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(saw_eof);
        // Without `enable`, reads work and do not say.
        let (rx2, mut tx2) = pair();
        tx2.write_all(b"x").unwrap();
        let (n, left) = loop {
            match recv(&rx2, &mut buf) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!((n, left), (1, None));
    }

    /// The property a reader relies on: stopping when the count reads 0, with edge-triggered
    /// readiness, never strands data. A writer on another thread sends 8 MB in writes of
    /// varied sizes while the reader reads in small pieces, so that data keeps arriving while
    /// a read holds the socket; every byte must arrive, with no wait of a second for an event.
    #[test]
    fn stopping_at_zero_left_never_strands_data_under_edge_triggered_readiness() {
        use mio::{Events, Interest, Poll, Token};
        const TOTAL_BYTES: usize = 8 << 20;
        let (rx, tx) = pair();
        enable(&rx).unwrap();
        let mut rx = mio::net::TcpStream::from_std(rx);
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut rx, Token(0), Interest::READABLE)
            .unwrap();
        let writer = std::thread::spawn(move || {
            let mut tx = tx;
            let data = vec![5u8; 70_000];
            let mut sent = 0;
            let mut size = 1;
            let mut writes = 0;
            while sent < TOTAL_BYTES {
                let n = size.min(TOTAL_BYTES - sent);
                tx.write_all(&data[..n]).unwrap();
                sent += n;
                size = size * 7 % 65_521 + 1;
                writes += 1;
                if writes % 64 == 0 {
                    // Let the reader catch up now and then, so that it does find the socket
                    // empty (the stop under test) and not only a count above 0.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            // Kept open until the reader is done: at the end of stream the count is never 0.
            tx
        });
        let mut events = Events::with_capacity(8);
        let mut buf = [0u8; 1_500];
        let mut got = 0;
        let mut saved = 0u64;
        while got < TOTAL_BYTES {
            poll.poll(&mut events, Some(std::time::Duration::from_secs(1)))
                .unwrap();
            assert!(
                !events.is_empty(),
                "stranded: {got} of {TOTAL_BYTES} bytes read, no event for a second"
            );
            loop {
                match recv(&rx, &mut buf) {
                    Ok((0, _)) => break,
                    Ok((n, left)) => {
                        got += n;
                        if left == Some(0) {
                            saved += 1;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        writer.join().unwrap();
        assert_eq!(got, TOTAL_BYTES);
        assert!(
            saved > 0,
            "the count was never 0: the test did not test the stop"
        );
    }
}
