//! Networking shared by workers and the ingest thread: listeners, HTTP request heads, output
//! queues with vectored writes, and the WebSocket connection state machine.

pub mod client;
pub mod conn;
pub mod http;
pub mod inq;
pub mod listener;
pub mod outqueue;
pub mod sweep;
pub mod uring;

/// Whether an I/O error means "try again when the socket is ready".
pub fn would_block(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::WouldBlock
}

/// Whether an I/O error means "interrupted by a signal, retry now".
pub fn interrupted(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::Interrupted
}

/// Waits for events like [`mio::Poll::poll`], but a wait cut short by a signal is a wake with
/// no events instead of an error: `epoll_wait` returns `EINTR` when a handler ran, and on Linux
/// also after the process was stopped and continued (`kill -STOP`, then `-CONT`), even with no
/// handler installed.
pub fn poll_events(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    timeout: Option<std::time::Duration>,
) -> std::io::Result<()> {
    match poll.poll(events, timeout) {
        Err(e) if interrupted(&e) => {
            events.clear();
            Ok(())
        }
        other => other,
    }
}

/// A connected loopback TCP pair for tests: the accepted side (non-blocking) and the client.
#[cfg(test)]
fn test_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (server, client)
}
