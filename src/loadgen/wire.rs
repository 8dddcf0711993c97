//! The client side of the WebSocket wire, as small as a load generator needs: the upgrade
//! request, masked text frames, a server-frame reader, and field scanners that pick `seq`,
//! `symbol` and the embedded send time out of a data message without a JSON parser.

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

/// The unsigned integer right after `key` (e.g. `"seq":`).
pub fn scan_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    let digits = hay[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&hay[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The string value right after `key` (e.g. `"symbol":"`), up to the closing quote.
pub fn scan_str<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = find(hay, key)? + key.len();
    let end = hay[at..].iter().position(|&b| b == b'"')?;
    Some(&hay[at..at + end])
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
        assert_eq!(scan_u64(payload, b"\"seq\":"), Some(42));
        assert_eq!(scan_u64(payload, b"\"t\":"), Some(123456789));
        assert_eq!(scan_str(payload, b"\"symbol\":\""), Some(&b"S7"[..]));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"xxab", b"ab"), Some(2));
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"ab", b""), None);
        let f = client_text_frame(&[b'a'; 300]);
        assert_eq!((f[0], f[1], f.len()), (0x81, 0x80 | 126, 300 + 8));
    }
}
