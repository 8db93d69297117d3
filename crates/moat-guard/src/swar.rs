//! Eight bytes at a time in a `u64` ("SIMD within a register"), for the loops that
//! classify every byte of the input: a byte-by-byte loop costs a mispredicted branch
//! wherever a run of one class ends, which in prose is every few bytes. Portable and
//! without `unsafe`; each function's tests check it against the byte-by-byte answer.

/// The high bit of every byte.
pub(crate) const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
/// The low bit of every byte (times `c`: `c` in every byte).
pub(crate) const LOW_BITS: u64 = 0x0101_0101_0101_0101;
/// The bit that makes an ASCII letter lowercase, in every byte.
pub(crate) const CASE_BITS: u64 = 0x2020_2020_2020_2020;

/// For each byte of `x`: the high bit set where the byte is in `lo..=hi`. Every byte
/// of `x` must be below 0x80, so that no subtraction borrows from its neighbour.
#[inline]
pub(crate) fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    let at_least = (x | HIGH_BITS) - LOW_BITS * u64::from(lo);
    let at_most = ((LOW_BITS * u64::from(hi)) | HIGH_BITS) - x;
    at_least & at_most & HIGH_BITS
}

/// `bytes[at..at + 8]` as a little-endian `u64` (the first byte lowest), if there are
/// eight.
#[inline]
pub(crate) fn load(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at + 8)?;
    Some(u64::from_le_bytes(chunk.try_into().expect("eight bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_byte_by_byte() {
        for (lo, hi) in [
            (b'a', b'z'),
            (b'0', b'9'),
            (b'=', b'='),
            (0, 0x7f),
            (0x2b, 0x2f),
        ] {
            for b in 0..0x80u8 {
                for pos in 0..8 {
                    // The byte among neighbours at both ends of the ASCII range.
                    for fill in [0u8, 0x7f, b'a'] {
                        let mut bytes = [fill; 8];
                        bytes[pos] = b;
                        let got = in_range(u64::from_le_bytes(bytes), lo, hi);
                        for (k, &c) in bytes.iter().enumerate() {
                            let want = (lo..=hi).contains(&c);
                            assert_eq!(got >> (8 * k + 7) & 1 == 1, want, "{c} in {lo}..={hi}");
                        }
                    }
                }
            }
        }
    }
}
