//! Reader for the IDX format of LeCun's MNIST files (also used by Fashion-MNIST).
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type these datasets use),
//! a dimension count, one big-endian u32 per dimension, then the row-major data. Files may be
//! gzipped as published (`train-images-idx3-ubyte.gz`); the gzip magic is recognised.
//!
//! The header is read first and the data size it declares is checked before anything is
//! allocated: against [`MAX_IDX_BYTES`], against the file's length for raw files, and for
//! gzipped ones by inflating at most one byte more than declared, so neither a lying header
//! nor a gzip bomb can make the reader hold more than the declared size.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The most data one IDX file may declare: 1 GiB. The largest published IDX dataset (EMNIST
/// ByClass, 814,255 images of 28x28) is 638 MB, MNIST's training images 47 MB; Ember holds a
/// whole split in memory, so a header declaring more is damaged or hostile.
pub const MAX_IDX_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read IDX file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("IDX file {path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Why reading an IDX stream stopped: the bytes break the format, or the stream failed.
enum Failure {
    Format(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Reads an unsigned-byte IDX file (raw or gzipped), checking that its size matches its
/// header exactly.
pub fn read_idx(path: &Path) -> Result<IdxArray, IdxError> {
    read_idx_with(path, |_| Ok(()))
}

/// [`read_idx`] with the caller's check of the dimensions (a shape, a bound), run on the
/// header before any data is read; its error says what was expected.
pub fn read_idx_with(
    path: &Path,
    check_dims: impl FnOnce(&[usize]) -> Result<(), String>,
) -> Result<IdxArray, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let format = |message| IdxError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    if reader.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]) {
        let mut gz = flate2::read::GzDecoder::new(reader);
        read_idx_from(&mut gz, None, check_dims).map_err(|failure| match failure {
            Failure::Format(message) => format(message),
            Failure::Io(e) => format(format!(
                "gzip stream is damaged ({e}); expected a gzipped IDX file"
            )),
        })
    } else {
        read_idx_from(&mut reader, Some(len), check_dims).map_err(|failure| match failure {
            Failure::Format(message) => format(message),
            Failure::Io(e) => io(e),
        })
    }
}

/// `root/name`, or `root/name.gz` when only the gzipped file is there.
pub fn find_idx_file(root: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|n| root.join(n))
        .find(|p| p.is_file())
}

/// Parses IDX bytes; the error says what was expected.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray, String> {
    read_idx_from(&mut &bytes[..], Some(bytes.len() as u64), |_| Ok(())).map_err(|failure| {
        match failure {
            Failure::Format(message) => message,
            Failure::Io(e) => e.to_string(),
        }
    })
}

/// Reads into `buf` until it is full or the stream ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads an IDX stream: header, dimensions checked (declared size against [`MAX_IDX_BYTES`],
/// then `check_dims`, then against the stream's `total_len` when known), then exactly the
/// declared data and a probe for more.
fn read_idx_from(
    reader: &mut impl Read,
    total_len: Option<u64>,
    check_dims: impl FnOnce(&[usize]) -> Result<(), String>,
) -> Result<IdxArray, Failure> {
    let bad = |message: String| Err(Failure::Format(message));
    let mut head = [0u8; 4];
    let found = read_up_to(reader, &mut head)?;
    if found < 4 {
        return bad(format!(
            "truncated header: expected at least 4 bytes, found {found}"
        ));
    }
    if head[0] != 0 || head[1] != 0 {
        return bad(format!(
            "bad magic number: expected 00 00 in the first two bytes, found {:02x} {:02x}",
            head[0], head[1]
        ));
    }
    if head[2] != 0x08 {
        return bad(format!(
            "unsupported element type 0x{:02x}: expected 0x08 (unsigned byte)",
            head[2]
        ));
    }
    let ndims = head[3] as usize;
    if ndims == 0 {
        return bad("expected at least one dimension, found 0".into());
    }
    let header = 4 + 4 * ndims;
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let found = read_up_to(reader, &mut dim_bytes)?;
    if found < dim_bytes.len() {
        return bad(format!(
            "truncated header: {ndims} dimensions need {header} bytes, found {}",
            4 + found
        ));
    }
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let Some(expected) = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) else {
        return bad(format!("dimensions {dims:?} overflow"));
    };
    if expected > MAX_IDX_BYTES {
        return bad(format!(
            "dimensions {dims:?} declare {expected} bytes of data; expected at most {MAX_IDX_BYTES} bytes \
             (1 GiB, Ember's bound for one IDX file)"
        ));
    }
    check_dims(&dims).map_err(Failure::Format)?;
    let truncated = |found: u64| {
        bad(format!(
            "truncated data: dimensions {dims:?} need {expected} bytes after the header, found {found}"
        ))
    };
    // A raw file's length says whether the data fits before any of it is read.
    if let Some(len) = total_len {
        let found = len.saturating_sub(header as u64);
        if found < expected as u64 {
            return truncated(found);
        }
        if found > expected as u64 {
            return bad(format!(
                "{} unexpected trailing bytes after the {expected} bytes that dimensions {dims:?} describe",
                found - expected as u64
            ));
        }
    }
    let mut data = vec![0u8; expected];
    let found = read_up_to(reader, &mut data)?;
    if found < expected {
        return truncated(found as u64);
    }
    // One byte more than declared is enough to know there is more; the rest is never inflated.
    if read_up_to(reader, &mut [0u8; 1])? > 0 {
        return bad(format!(
            "unexpected trailing bytes after the {expected} bytes that dimensions {dims:?} describe \
             (the file holds more data than its header declares)"
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Encodes an unsigned-byte IDX file; used to build test fixtures.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    assert_eq!(dims.iter().product::<usize>(), data.len());
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Gzips `prefix` followed by `zeros` zero bytes, cheaply even for gigabytes: one compressed
/// mebibyte of zeros is repeated (a few MB of gzip per GB inflated). Used to build test
/// fixtures of oversized streams (gzip bombs).
pub fn gzip_with_zeros(prefix: &[u8], zeros: u64) -> Vec<u8> {
    use std::io::Write;
    // Raw deflate blocks ended by a sync flush (byte-aligned, no final bit), so they chain.
    let deflate = |bytes: &[u8]| {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.flush().unwrap();
        encoder.get_ref().clone()
    };
    const CHUNK: u64 = 1 << 20;
    let chunk = vec![0u8; CHUNK as usize];
    let mut crc = flate2::Crc::new();
    crc.update(prefix);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate(prefix));
    let full = deflate(&chunk);
    let mut chunk_crc = flate2::Crc::new();
    chunk_crc.update(&chunk);
    for _ in 0..zeros / CHUNK {
        out.extend_from_slice(&full);
        crc.combine(&chunk_crc);
    }
    let rest = &chunk[..(zeros % CHUNK) as usize];
    out.extend(deflate(rest));
    crc.update(rest);
    // An empty final block (fixed Huffman), then CRC-32 and length mod 2^32.
    out.extend([0x03, 0x00]);
    out.extend(crc.sum().to_le_bytes());
    out.extend(((prefix.len() as u64 + zeros) as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_generated_array() {
        let data: Vec<u8> = (0..24).collect();
        let arr = parse_idx(&encode_idx(&[2, 3, 4], &data)).unwrap();
        assert_eq!(arr.dims, vec![2, 3, 4]);
        assert_eq!(arr.data, data);
    }

    #[test]
    fn truncated_data_is_a_clear_error() {
        let mut bytes = encode_idx(&[2, 3, 4], &[7; 24]);
        bytes.truncate(bytes.len() - 5);
        let err = parse_idx(&bytes).unwrap_err();
        assert!(err.contains("truncated data"), "{err}");
        assert!(
            err.contains("need 24 bytes") && err.contains("found 19"),
            "{err}"
        );
    }

    #[test]
    fn truncated_header_is_a_clear_error() {
        let bytes = encode_idx(&[2, 3, 4], &[7; 24]);
        let err = parse_idx(&bytes[..9]).unwrap_err();
        assert!(err.contains("truncated header"), "{err}");
    }

    #[test]
    fn wrong_magic_and_type_are_rejected() {
        let mut bytes = encode_idx(&[1], &[1]);
        bytes[2] = 0x0D; // float
        assert!(
            parse_idx(&bytes)
                .unwrap_err()
                .contains("unsupported element type")
        );
        bytes[0] = 1;
        assert!(parse_idx(&bytes).unwrap_err().contains("bad magic"));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes.push(0);
        assert!(parse_idx(&bytes).unwrap_err().contains("trailing"));
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzipped_files_read_like_raw_ones_and_damage_is_named() {
        let dir = std::env::temp_dir().join(format!("ember-idx-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..60).collect();
        let raw = encode_idx(&[3, 4, 5], &data);
        std::fs::write(dir.join("a-idx3-ubyte.gz"), gzip(&raw)).unwrap();
        let path = find_idx_file(&dir, "a-idx3-ubyte").unwrap();
        assert!(path.ends_with("a-idx3-ubyte.gz"));
        assert_eq!(read_idx(&path).unwrap(), parse_idx(&raw).unwrap());
        assert!(find_idx_file(&dir, "b-idx3-ubyte").is_none());

        let mut damaged = gzip(&raw);
        damaged.truncate(damaged.len() / 2);
        std::fs::write(&path, damaged).unwrap();
        let err = read_idx(&path).unwrap_err().to_string();
        assert!(
            err.contains("a-idx3-ubyte.gz") && err.contains("gzip stream is damaged"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_idx_names_the_file() {
        let dir = std::env::temp_dir().join(format!("ember-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("short-idx1-ubyte");
        std::fs::write(&path, &encode_idx(&[10], &[0; 10])[..12]).unwrap();
        let err = read_idx(&path).unwrap_err().to_string();
        assert!(
            err.contains("short-idx1-ubyte") && err.contains("truncated"),
            "{err}"
        );
        let missing = read_idx(&dir.join("missing")).unwrap_err().to_string();
        assert!(missing.contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn gzip_bomb_is_inflated_only_one_byte_past_its_declared_size() {
        // MNIST's header (60000 x 28 x 28 = 47 MB declared), then 64 MiB of zeros: 64 KB of gzip.
        let mut prefix = vec![0, 0, 8, 3];
        for d in [60_000u32, 28, 28] {
            prefix.extend(d.to_be_bytes());
        }
        let bomb = gzip_with_zeros(&prefix, 64 << 20);
        assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
        let mut inflated = Counting {
            inner: flate2::read::GzDecoder::new(&bomb[..]),
            read: 0,
        };
        let Err(Failure::Format(err)) = read_idx_from(&mut inflated, None, |_| Ok(())) else {
            panic!("a stream longer than declared was accepted");
        };
        assert!(err.contains("unexpected trailing bytes"), "{err}");
        assert!(err.contains("47040000 bytes"), "{err}");
        assert_eq!(inflated.read, 16 + 47_040_000 + 1);

        let dir = std::env::temp_dir().join(format!("ember-idx-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train-images-idx3-ubyte.gz");
        std::fs::write(&path, &bomb).unwrap();
        let err = read_idx(&path).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz") && err.contains("trailing"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gzip_with_zeros_inflates_to_exactly_its_input() {
        let gz = gzip_with_zeros(&encode_idx(&[3], &[0; 3])[..8], (1 << 20) + 5);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), 8 + (1 << 20) + 5);
        assert!(raw[8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn trailing_data_in_a_gzipped_file_is_refused() {
        let mut raw = encode_idx(&[2, 3], &[5; 6]);
        raw.extend([1, 2, 3, 4]);
        let err = match read_idx_from(
            &mut flate2::read::GzDecoder::new(&gzip(&raw)[..]),
            None,
            |_| Ok(()),
        ) {
            Err(Failure::Format(message)) => message,
            _ => panic!("trailing bytes in a gzipped file were accepted"),
        };
        assert!(
            err.contains("unexpected trailing bytes after the 6 bytes"),
            "{err}"
        );
    }

    #[test]
    fn absurd_declared_sizes_are_refused_before_reading() {
        // 10^12 bytes declared, no data: refused by the bound, not by a failed allocation.
        let mut bytes = vec![0, 0, 8, 3];
        for d in [100_000u32, 100_000, 100] {
            bytes.extend(d.to_be_bytes());
        }
        let err = parse_idx(&bytes).unwrap_err();
        assert!(
            err.contains("declare 1000000000000 bytes") && err.contains("at most 1073741824"),
            "{err}"
        );
        bytes[3] = 4;
        bytes.extend(u32::MAX.to_be_bytes());
        bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        bytes[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = parse_idx(&bytes).unwrap_err();
        assert!(err.contains("overflow"), "{err}");
    }

    #[test]
    fn raw_file_length_is_checked_against_the_header_before_reading() {
        // Declares 500 MB (under the bound) in a 12-byte file: refused from the length alone.
        let dir = std::env::temp_dir().join(format!("ember-idx-len-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big-idx1-ubyte");
        let mut bytes = vec![0, 0, 8, 1];
        bytes.extend(500_000_000u32.to_be_bytes());
        bytes.extend([1, 2, 3, 4]);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_idx(&path).unwrap_err().to_string();
        assert!(
            err.contains("need 500000000 bytes") && err.contains("found 4"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
