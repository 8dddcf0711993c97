//! The baseline: a minimal fan-out server with the same wire format, to measure what this
//! machine can do at all. No validation, no bookkeeping, no limits: one thread, subscribers
//! matched by symbol, and every burst read from the publisher coalesced into one `write` per
//! subscriber. tickfan's CPU per delivery is reported as a ratio to this.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::frame::FrameBuilder;

const PUBLIC: Token = Token(usize::MAX - 1);
const INGEST: Token = Token(usize::MAX - 2);

struct Peer {
    sock: TcpStream,
    upgraded: bool,
    publisher: bool,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Symbols subscribed (`None`: all).
    symbols: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow)]
    exchange: &'a str,
    #[serde(borrow)]
    symbol: &'a str,
    #[serde(rename = "dataType", borrow)]
    data_type: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Sub {
    #[serde(default)]
    symbols: Option<Vec<String>>,
}

/// Client frames in `buf` (masked): their payloads, unmasked; leaves partial frames.
fn client_frames(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let b = &buf[at..];
        if b.len() < 2 {
            break;
        }
        let (len, mut hl) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut x = [0u8; 8];
                x.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(x) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        let masked = b[1] & 0x80 != 0;
        let mask = if masked && b.len() >= hl + 4 {
            let m = [b[hl], b[hl + 1], b[hl + 2], b[hl + 3]];
            hl += 4;
            m
        } else if masked {
            break;
        } else {
            [0; 4]
        };
        if b.len() < hl + len {
            break;
        }
        let mut p = b[hl..hl + len].to_vec();
        if mask != [0; 4] {
            for (i, x) in p.iter_mut().enumerate() {
                *x ^= mask[i % 4];
            }
        }
        if b[0] & 0x0f == 0x1 {
            out.push(p);
        }
        at += hl + len;
    }
    buf.drain(..at);
    out
}

/// Runs the baseline server until the process ends.
pub fn serve(public: SocketAddr, ingest: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut pl = crate::net::listener::bind(public, 4096)?;
    let mut il = crate::net::listener::bind(ingest, 64)?;
    poll.registry()
        .register(&mut pl, PUBLIC, Interest::READABLE)?;
    poll.registry()
        .register(&mut il, INGEST, Interest::READABLE)?;
    eprintln!(
        "baseline: public {} ingest {}",
        pl.local_addr()?,
        il.local_addr()?
    );
    let mut peers: slab::Slab<Peer> = slab::Slab::new();
    let mut by_symbol: HashMap<String, Vec<usize>> = HashMap::new();
    let mut all_symbols: Vec<usize> = Vec::new();
    let mut seqs: HashMap<String, u64> = HashMap::new();
    let mut events = Events::with_capacity(4096);
    let mut scratch = vec![0u8; 1 << 20];
    let mut dirty: Vec<usize> = Vec::new();
    loop {
        crate::net::poll_events(&mut poll, &mut events, None)?;
        for ev in events.iter() {
            match ev.token() {
                PUBLIC | INGEST => {
                    let l = if ev.token() == PUBLIC { &pl } else { &il };
                    while let Ok((mut sock, _)) = l.accept() {
                        let _ = sock.set_nodelay(true);
                        let e = peers.vacant_entry();
                        poll.registry().register(
                            &mut sock,
                            Token(e.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        e.insert(Peer {
                            sock,
                            upgraded: false,
                            publisher: ev.token() == INGEST,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            symbols: None,
                        });
                    }
                }
                Token(k) => {
                    let Some(p) = peers.get_mut(k) else { continue };
                    let mut closed = false;
                    loop {
                        match p.sock.read(&mut scratch) {
                            Ok(0) => {
                                closed = true;
                                break;
                            }
                            Ok(n) => p.inbuf.extend_from_slice(&scratch[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    if !p.upgraded {
                        if let Some(end) = p.inbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&p.inbuf[..end]).to_string();
                            let key = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                                .unwrap_or("")
                                .trim()
                                .to_string();
                            p.out
                                .extend_from_slice(&crate::net::http::upgrade_response(&key));
                            p.inbuf.drain(..end + 4);
                            p.upgraded = true;
                        }
                    }
                    let payloads = if p.upgraded {
                        client_frames(&mut p.inbuf)
                    } else {
                        Vec::new()
                    };
                    let publisher = p.publisher;
                    {
                        for payload in payloads {
                            if publisher {
                                let text = String::from_utf8_lossy(&payload).into_owned();
                                let msgs: Vec<Msg> = if text.starts_with('[') {
                                    serde_json::from_str(&text).unwrap_or_default()
                                } else {
                                    serde_json::from_str(&text)
                                        .map(|m| vec![m])
                                        .unwrap_or_default()
                                };
                                for m in msgs {
                                    let seq = seqs.entry(m.symbol.to_string()).or_insert(0);
                                    *seq += 1;
                                    let mut fb =
                                        FrameBuilder::with_capacity(128 + m.data.get().len());
                                    let body = format!(
                                        r#"{{"type":"data","exchange":"{}","symbol":"{}","dataType":"{}","seq":{},"ts":0,"data":{}}}"#,
                                        m.exchange,
                                        m.symbol,
                                        m.data_type,
                                        seq,
                                        m.data.get()
                                    );
                                    fb.payload().extend_from_slice(body.as_bytes());
                                    let frame = fb.finish();
                                    let subs = by_symbol
                                        .get(m.symbol)
                                        .into_iter()
                                        .flatten()
                                        .chain(all_symbols.iter());
                                    for &s in subs {
                                        if let Some(sp) = peers.get_mut(s) {
                                            if sp.out.is_empty() {
                                                dirty.push(s);
                                            }
                                            sp.out.extend_from_slice(&frame);
                                        }
                                    }
                                }
                            } else if let Ok(sub) = serde_json::from_slice::<Sub>(&payload) {
                                let p = &mut peers[k];
                                match &sub.symbols {
                                    Some(list) => {
                                        for s in list {
                                            by_symbol.entry(s.clone()).or_default().push(k);
                                        }
                                    }
                                    None => all_symbols.push(k),
                                }
                                p.symbols = sub.symbols;
                                p.out.extend_from_slice(&crate::protocol::frame::text_frame(
                                    br#"{"type":"subscribed","id":1,"filterId":"f1"}"#,
                                ));
                            }
                        }
                    }
                    if let Some(p) = peers.get_mut(k) {
                        if !p.out.is_empty() {
                            dirty.push(k);
                        }
                    }
                    if closed {
                        let p = peers.remove(k);
                        match p.symbols {
                            Some(list) => {
                                for s in list {
                                    if let Some(v) = by_symbol.get_mut(&s) {
                                        v.retain(|&x| x != k);
                                    }
                                }
                            }
                            None => all_symbols.retain(|&x| x != k),
                        }
                    }
                }
            }
        }
        // One write per subscriber for everything this burst produced.
        dirty.sort_unstable();
        dirty.dedup();
        for k in dirty.drain(..) {
            if let Some(p) = peers.get_mut(k) {
                if let Ok(n) = p.sock.write(&p.out) {
                    p.out.drain(..n);
                }
            }
        }
    }
}
