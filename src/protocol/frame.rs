//! Server-to-client WebSocket frame encoding: unmasked, so one encoded frame serves every
//! subscriber.

use bytes::Bytes;

/// Opcode of a text frame with FIN set.
const FIN_TEXT: u8 = 0x81;

/// Length of the header of an unmasked server frame carrying `payload_len` bytes.
pub fn header_len(payload_len: usize) -> usize {
    if payload_len < 126 {
        2
    } else if payload_len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// Writes the header of an unmasked FIN text frame into `out` (which must be
/// [`header_len`] bytes long).
pub fn write_text_header(out: &mut [u8], payload_len: usize) {
    out[0] = FIN_TEXT;
    match out.len() {
        2 => out[1] = payload_len as u8,
        4 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
}

/// Room reserved in front of a payload for the largest header.
pub const MAX_HEADER_LEN: usize = 10;

/// Builds frames whose payload is written after a reserved header gap, so the frame is one
/// allocation with no copy of the payload.
#[derive(Debug)]
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// Starts a frame with room for `payload_hint` payload bytes.
    pub fn with_capacity(payload_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER_LEN + payload_hint);
        buf.resize(MAX_HEADER_LEN, 0);
        FrameBuilder { buf }
    }

    /// The payload being written (after the header gap).
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Finishes the text frame: writes the header just before the payload.
    pub fn finish(mut self) -> Bytes {
        let payload_len = self.buf.len() - MAX_HEADER_LEN;
        let hlen = header_len(payload_len);
        let start = MAX_HEADER_LEN - hlen;
        write_text_header(&mut self.buf[start..MAX_HEADER_LEN], payload_len);
        Bytes::from(self.buf).slice(start..)
    }
}

/// One complete unmasked frame at the start of `buf`: (opcode, payload start, payload end),
/// or `None` when `buf` holds less than a whole frame.
pub fn split_unmasked(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let op = buf[0] & 0x0f;
    let (len, hl): (usize, usize) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let end = hl.checked_add(len)?;
    (buf.len() >= end).then_some((op, hl, end))
}

/// Encodes a whole text frame around `payload`.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let mut b = FrameBuilder::with_capacity(payload.len());
    b.payload().extend_from_slice(payload);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::Frame;

    fn reference(payload: &[u8]) -> Vec<u8> {
        let f = Frame::message(
            payload.to_vec(),
            tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Text,
            ),
            true,
        );
        let mut out = Vec::new();
        f.format(&mut out).unwrap();
        out
    }

    #[test]
    fn frames_match_tungstenite_at_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![b'x'; len];
            assert_eq!(
                &text_frame(&payload)[..],
                &reference(&payload)[..],
                "len {len}"
            );
        }
    }
}
