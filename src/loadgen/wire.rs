//! The client side of the WebSocket wire, as small as a load generator needs: the upgrade
//! request, masked text frames, a server-frame reader, and field scanners that pick `seq`,
//! `symbol` and the embedded send time out of a data message in one pass, without a JSON parser.

/// The upgrade request for `path` on `host`.
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// A client text frame (FIN, masked with a zero key: valid, and no XOR work).
pub fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    client_frame(0x81, payload)
}

/// A client frame with the given first byte (FIN + opcode).
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// One complete server frame at the start of `buf`: (opcode, payload start, end), or `None`
/// when more bytes are needed.
pub fn server_frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    crate::protocol::frame::split_unmasked(buf)
}

/// The fields the tool checks in a data message: the stream (the `n` of symbol `S<n>`), `seq`,
/// and the send time embedded in `data` (`"t"`, ns). Each is looked for after the one before,
/// in the order the gateway writes them, so a message is scanned once.
pub fn data_fields(payload: &[u8]) -> Option<(usize, u64, u64)> {
    let (stream, at) = number_after(payload, 0, b"\"symbol\":\"S")?;
    let (seq, at) = number_after(payload, at, b"\"seq\":")?;
    let (sent, _) = number_after(payload, at, b"\"t\":")?;
    Some((usize::try_from(stream).ok()?, seq, sent))
}

/// The unsigned integer right after the first `key` at or after `from`, and where it ends.
fn number_after(hay: &[u8], from: usize, key: &[u8]) -> Option<(u64, usize)> {
    let start = from + find(hay.get(from..)?, key)? + key.len();
    let digits = hay[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let end = start + digits;
    let value = std::str::from_utf8(&hay[start..end]).ok()?.parse().ok()?;
    Some((value, end))
}

/// Where `needle` (not empty) first starts in `hay`. Candidates are picked by their first byte, so
/// a slice comparison runs only where that byte matches (a `memcmp` call per position was the load
/// tool's largest user-space cost).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    (0..=last_start).find(|&i| hay[i] == first && &hay[i + 1..i + needle.len()] == rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_scanners() {
        let payload = br#"{"type":"data","exchange":"bench","symbol":"S7","dataType":"trade","seq":42,"ts":1,"data":{"t":123456789,"p":"x"}}"#;
        let frame = crate::protocol::frame::text_frame(payload);
        let (op, a, b) = server_frame(&frame).unwrap();
        assert_eq!((op, &frame[a..b]), (1, &payload[..]));
        assert!(server_frame(&frame[..frame.len() - 1]).is_none());
        assert_eq!(data_fields(payload), Some((7, 42, 123456789)));
        // A field missing, or out of the gateway's order, is not read.
        let no_seq = br#"{"type":"data","symbol":"S7","ts":1,"data":{"t":1}}"#;
        assert_eq!(data_fields(no_seq), None);
        let reordered = br#"{"type":"data","seq":4,"symbol":"S7","data":{"t":1}}"#;
        assert_eq!(data_fields(reordered), None);
        assert_eq!(number_after(b"\"seq\":", 0, b"\"seq\":"), None);
        assert_eq!(number_after(b"x", 5, b"x"), None);
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"xxab", b"ab"), Some(2));
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"ab", b""), None);
        let f = client_text_frame(&[b'a'; 300]);
        assert_eq!((f[0], f[1], f.len()), (0x81, 0x80 | 126, 300 + 8));
    }
}
