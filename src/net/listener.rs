//! Binding listeners: SO_REUSEPORT so that every worker can own a listener on the same address.

use std::io;
use std::net::SocketAddr;

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
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<Vec<mio::net::TcpListener>> {
    let first = bind(addr, backlog)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind(bound, backlog)?);
    }
    Ok(all)
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
