//! Binding listeners: SO_REUSEPORT so that every worker can own a listener on the same address.

use std::io;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking listener with SO_REUSEADDR and SO_REUSEPORT.
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Binds `count` listeners on one address (port 0 resolves to one port shared by all).
///
/// Fails with `AddrInUse` when anything already listens on `addr`, another tickfan included:
/// SO_REUSEPORT alone would let a second process join the group and silently take a share of
/// the connections.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<Vec<mio::net::TcpListener>> {
    if addr.port() != 0 {
        ensure_free(addr)?;
    }
    let first = bind(addr, backlog)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind(bound, backlog)?);
    }
    Ok(all)
}

/// Binds and drops a socket without SO_REUSEPORT: this fails if any socket listens on
/// `addr` (SO_REUSEADDR still lets it past connections in `TIME_WAIT`).
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

/// Sets SO_SNDBUF on an accepted socket (0 leaves the kernel's autotuning).
pub fn set_send_buffer(sock: &TcpStream, bytes: usize) {
    if bytes > 0 {
        let _ = socket2::SockRef::from(sock).set_send_buffer_size(bytes);
    }
}

/// Where accepted connections are kept: a slab that hands out keys.
pub trait ConnStore<T> {
    /// The key the next [`Self::insert`] returns.
    fn vacant_key(&self) -> usize;
    /// Stores `value`; returns its key.
    fn insert(&mut self, value: T) -> usize;
}

impl<T> ConnStore<T> for Slab<T> {
    fn vacant_key(&self) -> usize {
        Slab::vacant_key(self)
    }
    fn insert(&mut self, value: T) -> usize {
        Slab::insert(self, value)
    }
}

/// Accepts every pending connection (edge-triggered: until `EAGAIN`), registers each for
/// `interest` under `token_base` plus its slab key, and stores `make(key, stream, peer)` in `slab`.
/// Returns how many were accepted, and the accept error (such as `EMFILE`) that ended the
/// round early, if one did: the rest then waits in the backlog.
pub fn accept_into<T>(
    listener: &TcpListener,
    registry: &Registry,
    token_base: usize,
    slab: &mut impl ConnStore<T>,
    who: &str,
    interest: Interest,
    mut make: impl FnMut(usize, TcpStream, SocketAddr) -> T,
) -> (usize, Option<io::Error>) {
    let mut accepted = 0;
    loop {
        match listener.accept() {
            Ok((mut sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let key = slab.vacant_key();
                if let Err(e) = registry.register(&mut sock, Token(token_base + key), interest) {
                    log::warn!("{who}: cannot register a connection from {peer}: {e}");
                    continue;
                }
                let stored = slab.insert(make(key, sock, peer));
                debug_assert_eq!(stored, key);
                accepted += 1;
            }
            Err(e) if super::would_block(&e) => break,
            Err(e) if super::interrupted(&e) => continue,
            Err(e) => return (accepted, Some(e)),
        }
    }
    (accepted, None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_shares_one_port() {
        let group = super::bind_group("127.0.0.1:0".parse().unwrap(), 3, 16).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert!(port != 0);
        assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}
