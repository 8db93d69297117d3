//! ICY (Shoutcast) metadata: a player that sends `Icy-MetaData: 1` gets `icy-metaint: N`
//! and, after every N bytes of audio, a metadata block (one length byte in 16-byte units,
//! then `StreamTitle='…';` padded with zeros); a zero byte when the title is unchanged.

use bytes::{BufMut, Bytes, BytesMut};

/// Audio bytes between metadata blocks.
pub const METAINT: usize = 16_000;
/// The longest title sent (the block holds at most 255 × 16 bytes).
const MAX_TITLE_BYTES: usize = 1000;

/// Interleaves metadata into one listener's audio.
#[derive(Debug)]
pub struct Interleaver {
    until_block: usize,
    sent_title: Option<String>,
}

impl Default for Interleaver {
    fn default() -> Self {
        Self {
            until_block: METAINT,
            sent_title: None,
        }
    }
}

impl Interleaver {
    /// `audio` with metadata blocks inserted where due, `title` the one now playing.
    pub fn interleave(&mut self, audio: &[u8], title: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(audio.len() + 64);
        let mut rest = audio;
        while !rest.is_empty() {
            let n = rest.len().min(self.until_block);
            out.put_slice(&rest[..n]);
            rest = &rest[n..];
            self.until_block -= n;
            if self.until_block == 0 {
                self.block(title, &mut out);
                self.until_block = METAINT;
            }
        }
        out.freeze()
    }

    fn block(&mut self, title: &str, out: &mut BytesMut) {
        if self.sent_title.as_deref() == Some(title) {
            out.put_u8(0);
            return;
        }
        let text = format!("StreamTitle='{}';", sanitize(title));
        let units = text.len().div_ceil(16);
        out.put_u8(units as u8);
        out.put_slice(text.as_bytes());
        out.put_bytes(0, units * 16 - text.len());
        self.sent_title = Some(title.to_string());
    }
}

/// The title as a block can carry it: no quote that would end it early, no control
/// characters, bounded on a character boundary.
fn sanitize(title: &str) -> String {
    let mut s = String::new();
    for c in title.chars() {
        let c = match c {
            '\'' => '\u{2019}',
            c if c.is_control() => ' ',
            c => c,
        };
        if s.len() + c.len_utf8() > MAX_TITLE_BYTES {
            break;
        }
        s.push(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an ICY stream back into audio and titles.
    fn parse(stream: &[u8]) -> (Vec<u8>, Vec<String>) {
        let (mut audio, mut titles) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < stream.len() {
            let n = (stream.len() - i).min(METAINT);
            audio.extend(&stream[i..i + n]);
            i += n;
            if n < METAINT || i >= stream.len() {
                break;
            }
            let len = usize::from(stream[i]) * 16;
            i += 1;
            if len > 0 {
                let text = String::from_utf8(stream[i..i + len].to_vec()).unwrap();
                titles.push(text.trim_end_matches('\0').to_string());
            }
            i += len;
        }
        (audio, titles)
    }

    #[test]
    fn blocks_come_every_metaint_bytes_and_only_when_the_title_changes() {
        let mut icy = Interleaver::default();
        let audio: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = Vec::new();
        for (k, chunk) in audio.chunks(7_000).enumerate() {
            let title = if k < 4 { "A - One" } else { "B - It's two" };
            stream.extend_from_slice(&icy.interleave(chunk, title));
        }
        let (back, titles) = parse(&stream);
        assert_eq!(back, audio);
        assert_eq!(
            titles,
            [
                "StreamTitle='A - One';",
                "StreamTitle='B - It\u{2019}s two';"
            ]
        );
    }

    #[test]
    fn a_long_title_is_cut_to_fit() {
        let mut icy = Interleaver::default();
        let out = icy.interleave(&vec![0; METAINT], &"é".repeat(5000));
        assert!(out.len() <= METAINT + 1 + 255 * 16);
    }
}
