//! One network connection from accept to drop: the HTTP request head, the upgrade to WebSocket
//! (tungstenite in charge of reading frames, pongs and closes), plain HTTP replies, and the
//! closing states. The owner (a worker or the ingest thread) decides what requests mean.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use bytes::Bytes;
use mio::net::TcpStream;
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use super::http::{self, HeadError, RequestHead};
use super::outqueue::{OutQueue, WriteReport};
use crate::protocol::CloseCode;

/// Bytes read per `read` while the request head is incomplete.
const HEAD_READ_CHUNK: usize = 1024;

/// The socket as tungstenite sees it: reads come from the socket, writes go to the output
/// queue (whole frames, since tungstenite's write buffer size is 0), and `flush` is a no-op:
/// the owner writes the queue once per loop turn.
///
/// `repr(C)`, in this order: the queue (56 bytes), `writable` and the socket fill one cache
/// line, which is all of the connection a delivery touches (docs/architecture.md, "Memory
/// layout of a session"). (In debug builds mio's socket carries a selector id and spills over.)
#[derive(Debug)]
#[repr(C)]
pub struct ConnIo {
    /// Frames waiting to be written.
    pub out: OutQueue,
    /// Whether the WebSocket is open and may still send (tungstenite's `can_write`, cached
    /// here so the hot path touches neither the boxed context nor the phase: it is only ever
    /// true in [`Phase::Open`], which [`Conn::set_phase`] keeps).
    pub writable: bool,
    /// The last read left the socket empty by the kernel's count (`TCP_INQ`, enabled on
    /// publisher sockets by [`Conn::count_unread`]): the next read answers `WouldBlock` without
    /// a system call.
    drained: bool,
    /// The socket.
    pub sock: TcpStream,
    /// Bytes read from the socket.
    pub bytes_in: u64,
}

/// Reads go on until `EAGAIN` (edge-triggered readiness), or until the kernel says no bytes are
/// left (`TCP_INQ`), which saves the last `recv`. A short read alone is not taken to mean the
/// socket is empty: on this kernel, data that arrives while a `recv` holds the socket (the
/// backlog) can be left after a short read with no new readiness event for it; a publisher
/// stalled that way under the heavy load scenario (docs/architecture.md, "The worker loop").
/// The kernel's count includes that backlog ([`super::inq`]).
impl Read for ConnIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if std::mem::take(&mut self.drained) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let (n, left) = super::inq::recv(&self.sock, buf)?;
        self.drained = n > 0 && left == Some(0);
        self.bytes_in += n as u64;
        Ok(n)
    }
}

impl Write for ConnIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push(Bytes::copy_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum Phase {
    /// Reading the request head; the bytes so far.
    Head(Vec<u8>),
    /// The head is complete and waits for the owner's decision; the bytes read so far.
    Routed(Vec<u8>),
    /// WebSocket open, or in its closing handshake.
    Open(Box<WebSocketContext>),
    /// Final bytes are being written; then the write side is shut, and either the connection
    /// is done (`wait_eof: false`, after a completed close handshake) or input is discarded until
    /// the peer closes (after an HTTP response or a failure, so unread input causes no reset).
    Lingering { shut: bool, wait_eof: bool },
    /// Nothing left: drop the connection.
    Done,
}

/// tungstenite's settings for a gateway-side WebSocket: our own output queue (no write
/// buffer), a read buffer of `read_buffer_bytes`, and messages and frames of at most
/// `max_message_bytes`.
pub fn ws_config(read_buffer_bytes: usize, max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// What a read produced.
#[derive(Debug)]
pub enum ReadEvent {
    /// A complete request head: the owner calls [`Conn::upgrade`] or [`Conn::respond`].
    Head(RequestHead),
    /// The request head was refused with this HTTP status (already queued).
    Rejected(u16),
    /// A WebSocket message (text, binary, ping, pong, or the peer's close).
    Message(Message),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed, or the close handshake finished: flush and drop.
    Closed,
    /// The peer broke the protocol: the owner should [`Conn::fail`] with this code.
    Failed(CloseCode, String),
}

/// A connection and its state (`repr(C)`: the [`ConnIo`] first, see there).
#[derive(Debug)]
#[repr(C)]
pub struct Conn {
    io: ConnIo,
    phase: Phase,
    /// Peer address.
    pub peer: SocketAddr,
}

impl Conn {
    /// A freshly accepted connection, expecting a request head.
    pub fn new(sock: TcpStream, peer: SocketAddr) -> Self {
        Conn {
            io: ConnIo {
                out: OutQueue::new(),
                writable: false,
                drained: false,
                sock,
                bytes_in: 0,
            },
            phase: Phase::Head(Vec::new()),
            peer,
        }
    }

    /// Asks the kernel to count the bytes left after each read (`TCP_INQ`), so that a read that
    /// empties the socket ends the caller's read loop without one more `recv`. For sockets that
    /// carry a stream of messages (publishers); without it (an older kernel) reads go on to
    /// `EAGAIN` as before.
    pub fn count_unread(&mut self) -> io::Result<()> {
        super::inq::enable(&self.io.sock)
    }

    /// A readiness event arrived: whatever the last read found, the socket may hold new bytes.
    pub fn on_readable(&mut self) {
        self.io.drained = false;
    }

    /// The socket, for (re)registration.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.io.sock
    }

    /// The socket, for one write of slices gathered from [`Self::out`] (then accounted with
    /// [`Self::flush_after`]).
    pub fn sock(&self) -> &TcpStream {
        &self.io.sock
    }

    /// The output queue.
    pub fn out(&self) -> &OutQueue {
        &self.io.out
    }

    /// Bytes read from the socket so far.
    pub fn bytes_in(&self) -> u64 {
        self.io.bytes_in
    }

    /// Whether the WebSocket is open and may carry messages.
    pub fn is_open(&self) -> bool {
        debug_assert!(!self.io.writable || matches!(self.phase, Phase::Open(_)));
        self.io.writable
    }

    /// Whether a close is under way (close frame sent or received, or lingering).
    pub fn is_closing(&self) -> bool {
        match &self.phase {
            Phase::Open(_) => !self.io.writable,
            Phase::Lingering { .. } => true,
            _ => false,
        }
    }

    /// Whether the request head is still being read or routed (no upgrade yet).
    pub fn in_handshake(&self) -> bool {
        matches!(self.phase, Phase::Head(_) | Phase::Routed(_))
    }

    /// Queues a WebSocket ping frame (heartbeat). Returns whether it was queued.
    pub fn ping(&mut self) -> bool {
        match &mut self.phase {
            Phase::Open(ctx) if ctx.can_write() => ctx
                .write(&mut self.io, Message::Ping(Bytes::from_static(b"tickfan")))
                .is_ok(),
            _ => false,
        }
    }

    /// Whether a flush has work: queued bytes, or a lingering write side still to shut.
    pub fn needs_flush(&self) -> bool {
        !self.io.out.is_empty()
            || (!self.is_open() && matches!(self.phase, Phase::Lingering { shut: false, .. }))
    }

    /// Moves to `phase`; leaving [`Phase::Open`] ends `writable`, so that [`Self::is_open`]
    /// can read that flag alone.
    fn set_phase(&mut self, phase: Phase) {
        if !matches!(phase, Phase::Open(_)) {
            self.io.writable = false;
        }
        self.phase = phase;
    }

    /// Whether the connection is finished and can be dropped.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Reads the next event. Call until [`ReadEvent::WouldBlock`] (edge-triggered readiness).
    pub fn read_event(&mut self, max_head_bytes: usize, scratch: &mut [u8]) -> ReadEvent {
        match &mut self.phase {
            Phase::Head(buf) => {
                let start = buf.len();
                buf.resize(start + HEAD_READ_CHUNK, 0);
                let r = self.io.read(&mut buf[start..]);
                buf.truncate(start + *r.as_ref().unwrap_or(&0));
                match r {
                    Ok(0) => self.finish(),
                    Ok(_) => match http::parse_head(buf, max_head_bytes) {
                        Ok(None) => self.read_event(max_head_bytes, scratch),
                        Ok(Some(head)) => {
                            self.phase = Phase::Routed(std::mem::take(buf));
                            ReadEvent::Head(head)
                        }
                        Err(HeadError::TooLarge) => self.reject(431, "request head too large"),
                        Err(HeadError::Malformed) => self.reject(400, "malformed HTTP request"),
                    },
                    Err(e) if super::would_block(&e) => ReadEvent::WouldBlock,
                    Err(e) if super::interrupted(&e) => self.read_event(max_head_bytes, scratch),
                    Err(_) => self.finish(),
                }
            }
            Phase::Routed(_) => ReadEvent::WouldBlock,
            Phase::Open(ctx) => match ctx.read(&mut self.io) {
                Ok(msg) => {
                    // A close from the peer ends the sending side.
                    self.io.writable = ctx.can_write();
                    ReadEvent::Message(msg)
                }
                Err(WsError::Io(e)) if super::would_block(&e) => ReadEvent::WouldBlock,
                Err(WsError::Io(e)) if super::interrupted(&e) => {
                    self.read_event(max_head_bytes, scratch)
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.set_phase(Phase::Lingering {
                        shut: false,
                        wait_eof: false,
                    });
                    ReadEvent::Closed
                }
                Err(WsError::Io(_))
                | Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    self.set_phase(Phase::Done);
                    ReadEvent::Closed
                }
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    ReadEvent::Failed(
                        CloseCode::TooBig,
                        format!("message of {size} bytes exceeds the limit of {max_size}"),
                    )
                }
                Err(WsError::Capacity(e)) => ReadEvent::Failed(CloseCode::TooBig, e.to_string()),
                Err(WsError::Utf8(_)) => {
                    ReadEvent::Failed(CloseCode::InvalidPayload, "invalid UTF-8 in text".into())
                }
                Err(e) => ReadEvent::Failed(CloseCode::Protocol, e.to_string()),
            },
            Phase::Lingering { .. } => loop {
                match self.io.read(scratch) {
                    Ok(0) => {
                        self.set_phase(Phase::Done);
                        return ReadEvent::Closed;
                    }
                    Ok(_) => continue,
                    Err(e) if super::interrupted(&e) => continue,
                    Err(e) if super::would_block(&e) => return ReadEvent::WouldBlock,
                    Err(_) => {
                        self.set_phase(Phase::Done);
                        return ReadEvent::Closed;
                    }
                }
            },
            Phase::Done => ReadEvent::Closed,
        }
    }

    fn finish(&mut self) -> ReadEvent {
        self.set_phase(Phase::Done);
        ReadEvent::Closed
    }

    /// Completes the upgrade of a routed request: queues `101` and opens the WebSocket.
    pub fn upgrade(&mut self, head: &RequestHead, key: &str, config: WebSocketConfig) {
        let Phase::Routed(buf) = &mut self.phase else {
            return;
        };
        let rest = buf.split_off(head.head_len.min(buf.len()));
        self.io.out.push(http::upgrade_response(key));
        let ctx = WebSocketContext::from_partially_read(rest, Role::Server, Some(config));
        self.phase = Phase::Open(Box::new(ctx));
        self.io.writable = true;
    }

    /// Queues a plain HTTP response and closes after it is written.
    pub fn respond(&mut self, response: Bytes) {
        self.io.out.push(response);
        self.set_phase(Phase::Lingering {
            shut: false,
            wait_eof: true,
        });
    }

    /// Queues a plain-text HTTP error and closes after it is written.
    pub fn reject(&mut self, status: u16, message: &str) -> ReadEvent {
        self.respond(http::error_response(status, message));
        ReadEvent::Rejected(status)
    }

    /// Queues a text frame built by [`crate::protocol::outbound`]. Returns whether it was queued
    /// (false once the WebSocket is closing).
    #[inline]
    pub fn send(&mut self, frame: Bytes) -> bool {
        if self.is_open() {
            self.io.out.push(frame);
            true
        } else {
            false
        }
    }

    /// Queues a data frame of stream `stream`. Returns whether it was queued (false once the
    /// WebSocket is closing).
    #[inline]
    pub fn send_data(&mut self, frame: Bytes, stream: u32, ingest_ns: u64) -> bool {
        if self.is_open() {
            self.io.out.push_data(frame, stream, ingest_ns);
            true
        } else {
            false
        }
    }

    /// The output queue, for backpressure (conflating or dropping data frames).
    pub fn out_mut(&mut self) -> &mut OutQueue {
        &mut self.io.out
    }

    /// Starts the close handshake with `code`; the connection ends when the peer answers.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if let Phase::Open(ctx) = &mut self.phase {
            let frame = CloseFrame {
                code: WsCloseCode::from(code.as_u16()),
                reason: reason.into(),
            };
            self.io.writable = false;
            if ctx.close(&mut self.io, Some(frame)).is_err() {
                self.set_phase(Phase::Lingering {
                    shut: false,
                    wait_eof: true,
                });
            }
        } else if !matches!(self.phase, Phase::Done) {
            self.set_phase(Phase::Lingering {
                shut: false,
                wait_eof: true,
            });
        }
    }

    /// Fails the WebSocket: queues a close frame with `code`, stops reading messages, and
    /// ends the connection once the frame is written.
    pub fn fail(&mut self, code: CloseCode, reason: &str) {
        self.close(code, reason);
        if !matches!(self.phase, Phase::Done) {
            self.set_phase(Phase::Lingering {
                shut: false,
                wait_eof: true,
            });
        }
    }

    /// Writes pending output. When lingering and drained, shuts the write side; when the close
    /// handshake is over and drained, the connection is done. `on_data` gets the accept time of
    /// every data frame written in full.
    pub fn flush(&mut self, on_data: impl FnMut(u64)) -> io::Result<WriteReport> {
        let report = self.io.out.write_to(&mut self.io.sock, on_data)?;
        Ok(self.after_flush(report))
    }

    /// [`Self::flush`] for a connection whose first write was already made from the slices of
    /// [`OutQueue::gather`], with result `first`: accounts it, and goes on as `flush` does.
    pub fn flush_after(
        &mut self,
        first: io::Result<usize>,
        on_data: impl FnMut(u64),
    ) -> io::Result<WriteReport> {
        let report = self
            .io
            .out
            .complete_write(first, &mut self.io.sock, on_data)?;
        Ok(self.after_flush(report))
    }

    fn after_flush(&mut self, report: WriteReport) -> WriteReport {
        // (An open connection is not lingering: the phase is not read on the delivery path.)
        if report.drained && !self.is_open() {
            if let Phase::Lingering { shut, wait_eof } = &mut self.phase {
                if !*wait_eof {
                    self.set_phase(Phase::Done);
                } else if !*shut {
                    *shut = true;
                    if self.io.sock.shutdown(Shutdown::Write).is_err() {
                        self.set_phase(Phase::Done);
                    }
                }
            }
        }
        report
    }

    /// Marks the connection done (for errors the owner detects).
    pub fn kill(&mut self) {
        self.set_phase(Phase::Done);
    }
}

#[cfg(test)]
mod layout {
    use super::{Conn, ConnIo};
    use std::mem::offset_of;

    /// The queue, `writable` and the socket are the first 64 bytes of a `Conn`: with the
    /// session's own line before it, a delivery touches two cache lines (worker::session).
    #[test]
    fn the_delivery_fields_come_first() {
        assert_eq!(offset_of!(Conn, io), 0);
        assert_eq!(offset_of!(ConnIo, out), 0);
        assert!(offset_of!(ConnIo, writable) < offset_of!(ConnIo, sock));
        #[cfg(not(debug_assertions))]
        assert!(offset_of!(ConnIo, sock) + std::mem::size_of::<mio::net::TcpStream>() <= 64);
    }
}
