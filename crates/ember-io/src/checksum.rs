//! The checksum of the files Ember writes (checkpoint files, configs, classifier weights) and of
//! dataset fingerprints: CRC-32 (IEEE 802.3, the checksum of zip, gzip and PNG), computed by the
//! `crc32fast` crate. It catches truncated, garbled and replaced files; it is not a
//! cryptographic hash.
//!
//! A checksum is written as `crc32:` and 8 lower-case hex digits, so every file records which
//! algorithm made it.

/// The algorithm's name, written before every checksum.
pub const ALGORITHM: &str = "crc32";

/// A checksum fed incrementally (e.g. a dataset's pixels, then its labels).
#[derive(Clone, Default)]
pub struct Checksum(crc32fast::Hasher);

impl Checksum {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// `crc32:` and the checksum as 8 lower-case hex digits.
    pub fn finish(self) -> String {
        format!("{ALGORITHM}:{:08x}", self.0.finalize())
    }
}

/// The checksum of one byte string, e.g. `crc32:cbf43926`.
pub fn checksum(bytes: &[u8]) -> String {
    let mut h = Checksum::new();
    h.update(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crc32_check_values_and_streams() {
        // The check value of CRC-32/ISO-HDLC (the catalogue's "123456789" test).
        assert_eq!(checksum(b"123456789"), "crc32:cbf43926");
        assert_eq!(checksum(b""), "crc32:00000000");
        assert_eq!(
            checksum(b"The quick brown fox jumps over the lazy dog"),
            "crc32:414fa339"
        );
        // Fixed width: leading zeros are kept.
        assert_eq!(checksum(b"\x9d\x0a\xd9\x6d").len(), "crc32:".len() + 8);
        let mut h = Checksum::new();
        h.update(b"1234");
        h.update(b"56789");
        assert_eq!(h.finish(), checksum(b"123456789"));
    }
}
