//! Server-sent events: an incremental parser that survives any chunking, and the writer.
//!
//! The parser follows the WHATWG event-stream rules: lines end in LF, CRLF or CR (a CRLF
//! split across two reads is still one line end), `:` starts a comment, `data:` lines
//! join with `\n`, a blank line dispatches. UTF-8 is decoded per line, so a character
//! split across reads is whole by the time its line ends. One event may hold at most
//! [`MAX_EVENT_BYTES`]; a bigger one is an error that ends the stream, never a bigger
//! buffer.
//!
//! ```
//! use moat_llm::sse::SseParser;
//! let mut p = SseParser::new();
//! let mut events = p.feed(b"event: ping\ndata: {\"a\"").unwrap();
//! assert!(events.is_empty());
//! events = p.feed(b":1}\r\n\r\n").unwrap();
//! assert_eq!(events[0].event.as_deref(), Some("ping"));
//! assert_eq!(events[0].data, "{\"a\":1}");
//! ```

/// The most bytes one event may carry (its lines together).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past [`MAX_EVENT_BYTES`].
    #[error("an upstream event is larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    /// A line is not UTF-8.
    #[error("an upstream event is not valid UTF-8")]
    NotUtf8,
}

/// An incremental event-stream parser.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous read ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// Bytes of the event being built, lines included, for the cap.
    size: usize,
    /// Where in the last fed bytes the last blank line ended.
    boundary: Option<usize>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; returns the events they completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        let fed = bytes.len();
        self.boundary = None;
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.grow(pos)?;
            self.line.extend_from_slice(&bytes[..pos]);
            let cr = bytes[pos] == b'\r';
            bytes = &bytes[pos + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            if line.is_empty() {
                self.boundary = Some(fed - bytes.len());
            }
            if let Some(event) = self.line_done(&line)? {
                out.push(event);
            }
        }
        self.grow(bytes.len())?;
        self.line.extend_from_slice(bytes);
        Ok(out)
    }

    /// How many of the bytes last fed end at an event boundary (a blank line): what a
    /// proxy may forward without leaving its client inside a half-sent event. None when
    /// they hold no boundary.
    pub fn last_boundary(&self) -> Option<usize> {
        self.boundary
    }

    fn grow(&mut self, n: usize) -> Result<(), SseError> {
        self.size += n;
        if self.size > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            self.size = 0;
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return Ok(None);
            }
            return Ok(Some(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            }));
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields don't matter to a proxy
        }
        Ok(None)
    }
}

/// An event as bytes: `event: NAME` (if any), the data (one `data:` line per line), a
/// blank line.
pub fn encode(event: Option<&str>, data: &str) -> bytes::Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = event {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], step: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            out.extend(p.feed(chunk).unwrap());
        }
        out
    }

    #[test]
    fn any_chunking_gives_the_same_events() {
        let stream = "event: a\r\ndata: héllo\r\ndata: wörld\r\n\r\n: comment\n\ndata:x\rdata: y\r\revent: b\ndata\n\n";
        let expected = all(stream.as_bytes(), stream.len());
        assert_eq!(
            expected,
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "héllo\nwörld".into()
                },
                SseEvent {
                    event: None,
                    data: "x\ny".into()
                },
                SseEvent {
                    event: Some("b".into()),
                    data: "".into()
                },
            ]
        );
        for step in 1..stream.len() {
            assert_eq!(all(stream.as_bytes(), step), expected, "step {step}");
        }
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: 1\r").unwrap().is_empty());
        assert!(p.feed(b"\n").unwrap().is_empty());
        assert_eq!(p.feed(b"\r\n").unwrap().len(), 1);
    }

    #[test]
    fn an_event_over_the_cap_is_an_error() {
        let mut p = SseParser::new();
        let line = vec![b'a'; 64 * 1024];
        let mut result = Ok(Vec::new());
        p.feed(b"data: ").unwrap();
        for _ in 0..17 {
            result = p.feed(&line);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::TooLarge));
        // Many data lines add up too.
        let mut p = SseParser::new();
        let mut err = None;
        for _ in 0..20_000 {
            if let Err(e) = p.feed(&[b"data: ".as_slice(), &[b'b'; 60], b"\n"].concat()) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(SseError::TooLarge));
    }

    #[test]
    fn encode_round_trips() {
        let bytes = encode(Some("message_start"), "{\"a\":\n1}");
        let mut p = SseParser::new();
        let events = p.feed(&bytes).unwrap();
        assert_eq!(events[0].event.as_deref(), Some("message_start"));
        assert_eq!(events[0].data, "{\"a\":\n1}");
    }

    #[test]
    fn boundaries_split_whole_events_from_the_rest() {
        let mut p = SseParser::new();
        p.feed(b"data: 1\n\ndata: 2\n\ndata: 3").unwrap();
        assert_eq!(p.last_boundary(), Some(18));
        p.feed(b"more").unwrap();
        assert_eq!(p.last_boundary(), None);
        p.feed(b"\r\n\r\nx").unwrap();
        assert_eq!(p.last_boundary(), Some(4));
        // Forwarding the bytes up to each boundary hands a client whole events only.
        let stream = b"event: a\ndata: 1\n\ndata: 2\r\n\r\n: c\n\ndata: 3\n\n";
        for step in 1..stream.len() {
            let mut p = SseParser::new();
            let (mut sent, mut held) = (Vec::new(), Vec::new());
            for chunk in stream.chunks(step) {
                p.feed(chunk).unwrap();
                held.extend_from_slice(chunk);
                if let Some(b) = p.last_boundary() {
                    let keep = chunk.len() - b;
                    let upto = held.len() - keep;
                    sent.extend(held.drain(..upto));
                }
                let whole = all(&sent, sent.len().max(1));
                assert_eq!(all(&sent, 1), whole, "step {step}");
                assert!(
                    sent.is_empty() || matches!(sent.last(), Some(b'\n' | b'\r')),
                    "step {step}"
                );
            }
            assert_eq!(sent, stream, "step {step}");
        }
    }
}
