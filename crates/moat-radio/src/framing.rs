//! Cutting the encoder's output into whole units (MP3 frames, Ogg pages), so a listener
//! who joins at any moment starts on a boundary a player can decode from, and so an Ogg
//! stream's header pages can be replayed to each newcomer.

use bytes::{Buf, Bytes, BytesMut};

/// What the framer found in the bytes it was given.
#[derive(Debug, Default)]
pub struct Framed {
    /// Whole units, in order, joined (an Ogg stream's header pages are not among them).
    pub units: Option<Bytes>,
    /// Ogg only: a new stream began, and these are its header pages, which come before
    /// `units`.
    pub headers: Option<Bytes>,
}

/// A framer for one encoder run.
#[derive(Debug)]
pub enum Framer {
    /// MPEG audio frames.
    Mp3(BytesMut),
    /// Ogg pages, with the header pages of the current stream being collected.
    Ogg {
        /// Bytes not yet a whole page.
        buf: BytesMut,
        /// Header pages seen so far of the stream that began last.
        headers: BytesMut,
        /// Whether the headers are still being collected.
        collecting: bool,
    },
}

/// The longest run of bytes without a frame before they are dropped as garbage.
const MAX_PENDING: usize = 64 * 1024;

impl Framer {
    /// A framer for MP3.
    pub fn mp3() -> Framer {
        Framer::Mp3(BytesMut::new())
    }

    /// A framer for Ogg.
    pub fn ogg() -> Framer {
        Framer::Ogg {
            buf: BytesMut::new(),
            headers: BytesMut::new(),
            collecting: false,
        }
    }

    /// Takes `bytes` and returns the whole units now available.
    pub fn push(&mut self, bytes: &[u8]) -> Framed {
        match self {
            Framer::Mp3(buf) => {
                buf.extend_from_slice(bytes);
                let mut end = 0;
                loop {
                    match mp3_frame_len(&buf[end..]) {
                        Some(FrameAt::Frame(len)) if end + len <= buf.len() => end += len,
                        Some(FrameAt::Frame(_)) | None => break,
                        Some(FrameAt::Garbage(skip)) => {
                            if end > 0 {
                                break;
                            }
                            buf.advance(skip);
                        }
                    }
                }
                if buf.len() > MAX_PENDING && end == 0 {
                    buf.clear();
                }
                Framed {
                    units: (end > 0).then(|| buf.split_to(end).freeze()),
                    headers: None,
                }
            }
            Framer::Ogg {
                buf,
                headers,
                collecting,
            } => {
                buf.extend_from_slice(bytes);
                let mut out = BytesMut::new();
                let mut finished_headers = None;
                loop {
                    match ogg_page_len(buf) {
                        Some(Ok(len)) if len <= buf.len() => {
                            let page = buf.split_to(len);
                            let bos = page[5] & 0x02 != 0;
                            let granule =
                                u64::from_le_bytes(page[6..14].try_into().expect("8 bytes"));
                            if bos {
                                headers.clear();
                                *collecting = true;
                            }
                            if *collecting && granule == 0 {
                                headers.extend_from_slice(&page);
                                continue;
                            }
                            if *collecting {
                                *collecting = false;
                                finished_headers = Some(headers.clone().freeze());
                            }
                            out.extend_from_slice(&page);
                        }
                        Some(Ok(_)) | None => break,
                        Some(Err(())) => {
                            // Not at a page: resynchronise on the next capture pattern.
                            let next = buf[1..]
                                .windows(4)
                                .position(|w| w == b"OggS")
                                .map(|p| p + 1)
                                .unwrap_or(buf.len().saturating_sub(3));
                            buf.advance(next);
                        }
                    }
                }
                if buf.len() > MAX_PENDING {
                    buf.clear();
                }
                Framed {
                    units: (!out.is_empty()).then(|| out.freeze()),
                    headers: finished_headers,
                }
            }
        }
    }
}

enum FrameAt {
    /// A frame of this many bytes starts here.
    Frame(usize),
    /// No frame here; skip this many bytes.
    Garbage(usize),
}

/// The length of the MPEG audio frame at the start of `b` (`None`: need more bytes).
fn mp3_frame_len(b: &[u8]) -> Option<FrameAt> {
    if b.len() < 4 {
        return None;
    }
    if b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        let skip = b[1..]
            .iter()
            .position(|&x| x == 0xFF)
            .map_or(b.len(), |p| p + 1);
        return Some(FrameAt::Garbage(skip));
    }
    let version = (b[1] >> 3) & 0x03; // 0: 2.5, 2: 2, 3: 1
    let layer = (b[1] >> 1) & 0x03; // 1: III
    let bitrate_index = (b[2] >> 4) as usize;
    let rate_index = ((b[2] >> 2) & 0x03) as usize;
    let padding = usize::from((b[2] >> 1) & 0x01);
    if version == 1 || layer != 1 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return Some(FrameAt::Garbage(1));
    }
    const V1: [usize; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V2: [usize; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    const RATES: [usize; 3] = [44_100, 48_000, 32_000];
    let (kbps, rate, coeff) = match version {
        3 => (V1[bitrate_index], RATES[rate_index], 144),
        2 => (V2[bitrate_index], RATES[rate_index] / 2, 72),
        _ => (V2[bitrate_index], RATES[rate_index] / 4, 72),
    };
    Some(FrameAt::Frame(coeff * kbps * 1000 / rate + padding))
}

/// The length of the Ogg page at the start of `b` (`None`: need more; `Err`: not a page).
fn ogg_page_len(b: &[u8]) -> Option<Result<usize, ()>> {
    if b.len() < 27 {
        return (b.len() >= 4 && &b[..4] != b"OggS").then_some(Err(()));
    }
    if &b[..4] != b"OggS" || b[4] != 0 {
        return Some(Err(()));
    }
    let segments = usize::from(b[26]);
    if b.len() < 27 + segments {
        return None;
    }
    let body: usize = b[27..27 + segments].iter().map(|&s| usize::from(s)).sum();
    Some(Ok(27 + segments + body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kbps_index: u8, padding: bool) -> Vec<u8> {
        let header = [
            0xFF,
            0xFB,
            (kbps_index << 4) | if padding { 2 } else { 0 },
            0x44,
        ];
        let len = mp3_frame_len(&header).map(|f| match f {
            FrameAt::Frame(n) => n,
            FrameAt::Garbage(_) => panic!("not a frame"),
        });
        let mut f = header.to_vec();
        f.resize(len.unwrap(), 0x55);
        f
    }

    #[test]
    fn mp3_is_cut_at_frame_boundaries_across_reads() {
        let a = frame(11, false); // 192 kbit/s, 44.1 kHz: 626 bytes
        assert_eq!(a.len(), 626);
        let b = frame(11, true);
        let mut stream = b"junk".to_vec();
        stream.extend(&a);
        stream.extend(&b);
        stream.extend(&a[..100]);
        let mut framer = Framer::mp3();
        let out = framer.push(&stream[..300]);
        assert!(out.units.is_none());
        let out = framer.push(&stream[300..]);
        assert_eq!(out.units.unwrap().len(), a.len() + b.len());
        let out = framer.push(&a[100..]);
        assert_eq!(out.units.unwrap().len(), a.len());
    }

    fn page(bos: bool, granule: u64, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(if bos { 2 } else { 0 });
        p.extend(granule.to_le_bytes());
        p.extend([0; 12]);
        p.push(1);
        p.push(body.len() as u8);
        p.extend(body);
        p
    }

    #[test]
    fn ogg_headers_are_kept_for_newcomers() {
        let mut stream = page(true, 0, b"OpusHead");
        stream.extend(page(false, 0, b"OpusTags"));
        stream.extend(page(false, 960, b"audio1"));
        stream.extend(page(false, 1920, b"audio2"));
        let mut framer = Framer::ogg();
        let out = framer.push(&stream);
        let headers = out.headers.unwrap();
        assert_eq!(headers.len(), 2 * 27 + 1 + 8 + 1 + 8);
        assert_eq!(out.units.unwrap().len(), stream.len() - headers.len());
    }
}
