//! The publish fast path: one forward pass over a publisher message that finds its fields and
//! the extent of its `data`, checking the JSON grammar as it goes. It answers only the plain
//! case (no escapes in keys or names, no surrogate `\u` escapes, shallow nesting, no duplicate
//! fields); for anything else it gives up (`None`) and the caller parses with serde_json, which
//! knows every case and words the error. So it never accepts what serde_json refuses: a
//! randomized test holds it to that.
//!
//! Why: serde_json's typed parse touched about 115 lines of code per message (cachegrind,
//! light), which the light scenario pays cold after every idle wait (docs/benchmarks-history.md).

/// Nesting past this gives up (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

/// The fields of a plain publisher message, borrowed from its text.
#[derive(Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    /// `exchange`, with no escapes.
    pub exchange: &'a str,
    /// `symbol`, with no escapes.
    pub symbol: &'a str,
    /// `dataType`, with no escapes.
    pub data_type: &'a str,
    /// `ts` when given as an integer; `None` when absent or `null`.
    pub ts: Option<u64>,
    /// The `data` value's text (not `null`), exactly as written.
    pub data: &'a str,
}

/// Which of the known keys a key is.
#[derive(Clone, Copy)]
enum Key {
    Exchange,
    Symbol,
    DataType,
    Ts,
    Data,
    Other,
}

/// A cursor over one JSON text. Every method returns `None` for "not the plain case".
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.pos += 1)
    }

    fn at_end(&self) -> bool {
        self.pos == self.text.len()
    }

    /// A string at the cursor: the text between its quotes, and whether it holds escapes.
    /// Gives up on a control character (invalid) and on a surrogate `\u` escape.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let hex = self.text.get(self.pos + 1..self.pos + 5)?;
                            let unit = u16::from_str_radix(hex, 16).ok()?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit())
                                || (0xD800..0xE000).contains(&unit)
                            {
                                return None;
                            }
                            self.pos += 5;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
        let s = &self.text[start..self.pos];
        self.pos += 1;
        Some((s, escaped))
    }

    /// Moves past string bytes that need no look: not `"`, `\\` or a control character.
    /// Eight at a time while none of the eight does (bit tricks as in serde_json's
    /// `skip_to_escape`), then one by one.
    fn skip_plain(&mut self) {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        let bytes = self.bytes();
        while let Some(chunk) = bytes.get(self.pos..self.pos + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_ne_bytes(word);
            let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
            let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
            if has_zero(x ^ (ONES * u64::from(b'"')))
                | has_zero(x ^ (ONES * u64::from(b'\\')))
                | control
                != 0
            {
                break;
            }
            self.pos += 8;
        }
        while let Some(&b) = bytes.get(self.pos) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.pos += 1;
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number by JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            (self.digits() > 0).then_some(())?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            (self.digits() > 0).then_some(())?;
        }
        Some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.text.get(self.pos..)?;
        rest.starts_with(word).then(|| self.pos += word.len())
    }

    /// Skips one value, checking its grammar.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.container(depth, b'}', true),
            b'[' => self.container(depth, b']', false),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number(),
        }
    }

    /// An object (`keyed`) or array, the cursor on its opening bracket.
    fn container(&mut self, depth: usize, close: u8, keyed: bool) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            if keyed {
                self.string()?;
                self.ws();
                self.eat(b':')?;
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            if self.eat(close).is_some() {
                return Some(());
            }
            self.eat(b',')?;
            self.ws();
        }
    }

    /// A `ts`: a non-negative integer that fits in u64, or `null`.
    fn ts(&mut self) -> Option<Option<u64>> {
        if self.literal("null").is_some() {
            return Some(None);
        }
        let start = self.pos;
        let n = self.digits();
        let text = &self.text[start..self.pos];
        if n == 0 || (n > 1 && text.starts_with('0')) {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        text.parse().ok().map(Some)
    }
}

/// The fields of `text` when it is one plain publisher message (an object with string
/// `exchange`, `symbol`, `dataType`, a non-null `data`, an optional integer `ts`, and any
/// other fields, which are skipped); `None` for anything else, valid or not.
pub fn message(text: &str) -> Option<Fields<'_>> {
    let mut s = Scanner::new(text);
    s.ws();
    s.eat(b'{')?;
    let mut names: [Option<&str>; 3] = [None; 3];
    let mut ts: Option<Option<u64>> = None;
    let mut data: Option<&str> = None;
    s.ws();
    loop {
        let (key, escaped) = s.string()?;
        if escaped {
            return None;
        }
        let key = match key {
            "exchange" => Key::Exchange,
            "symbol" => Key::Symbol,
            "dataType" => Key::DataType,
            "ts" => Key::Ts,
            "data" => Key::Data,
            _ => Key::Other,
        };
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            Key::Exchange | Key::Symbol | Key::DataType => {
                let slot = &mut names[key as usize];
                let (value, escaped) = s.string()?;
                if escaped || slot.is_some() {
                    return None;
                }
                *slot = Some(value);
            }
            Key::Ts => {
                if ts.is_some() {
                    return None;
                }
                ts = Some(s.ts()?);
            }
            Key::Data => {
                let start = s.pos;
                s.value(1)?;
                let value = &text[start..s.pos];
                if data.is_some() || value == "null" {
                    return None;
                }
                data = Some(value);
            }
            Key::Other => s.value(1)?,
        }
        s.ws();
        if s.eat(b'}').is_some() {
            break;
        }
        s.eat(b',')?;
        s.ws();
    }
    s.ws();
    if !s.at_end() {
        return None;
    }
    let [Some(exchange), Some(symbol), Some(data_type)] = names else {
        return None;
    };
    Some(Fields {
        exchange,
        symbol,
        data_type,
        ts: ts.flatten(),
        data: data?,
    })
}

/// The elements' texts when `text` is a JSON array whose elements are all plain by this
/// scanner's grammar; `None` for anything else, valid or not.
pub fn array(text: &str) -> Option<Vec<&str>> {
    let mut s = Scanner::new(text);
    s.ws();
    s.eat(b'[')?;
    s.ws();
    let mut items = Vec::new();
    if s.eat(b']').is_none() {
        loop {
            let start = s.pos;
            s.value(1)?;
            items.push(&text[start..s.pos]);
            s.ws();
            if s.eat(b']').is_some() {
                break;
            }
            s.eat(b',')?;
            s.ws();
        }
    }
    s.ws();
    s.at_end().then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_message() {
        let f = message(
            r#" {"exchange":"binance", "symbol" : "BTCUSDT","x":[1,{"y":null}],"dataType":"trade","ts":17,"data":{"p":"1.5","q":[-0.5e+3,true]}} "#,
        )
        .unwrap();
        assert_eq!(
            f,
            Fields {
                exchange: "binance",
                symbol: "BTCUSDT",
                data_type: "trade",
                ts: Some(17),
                data: r#"{"p":"1.5","q":[-0.5e+3,true]}"#,
            }
        );
    }

    #[test]
    fn what_it_leaves_to_serde_json() {
        for text in [
            r#"{"exchange":"a\u0062","symbol":"b","dataType":"c","data":1}"#,
            r#"{"exch\u0061nge":"a","symbol":"b","dataType":"c","data":1}"#,
            r#"{"exchange":"a","exchange":"a","symbol":"b","dataType":"c","data":1}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":null}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":"\ud800"}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","ts":1e3,"data":1}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","ts":01,"data":1}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","ts":18446744073709551616,"data":1}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":01}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":1,}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":[1,]}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":"tab	in"}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":1} x"#,
            r#"{"exchange":"a","symbol":"b","data":1}"#,
        ] {
            assert_eq!(message(text), None, "{text}");
        }
        let deep = format!(
            r#"{{"exchange":"a","symbol":"b","dataType":"c","data":{}1{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(message(&deep), None);
    }

    #[test]
    fn arrays() {
        assert_eq!(
            array(" [ {\"a\":1} , 2,\"x\" ] "),
            Some(vec!["{\"a\":1}", "2", "\"x\""])
        );
        assert_eq!(array("[]"), Some(vec![]));
        for text in ["[1,]", "[1", "[1] 2", "{}", "[\"\\ud800\"]"] {
            assert_eq!(array(text), None, "{text}");
        }
    }
}
