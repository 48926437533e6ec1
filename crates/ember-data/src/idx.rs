//! Reader for the IDX format of LeCun's MNIST files (also used by Fashion-MNIST).
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type these datasets use),
//! a dimension count, one big-endian u32 per dimension, then the row-major data. Files may be
//! gzipped as published (`train-images-idx3-ubyte.gz`); the gzip magic is recognised.

use std::path::{Path, PathBuf};

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

/// Reads an unsigned-byte IDX file (raw or gzipped), checking that its size matches its
/// header exactly.
pub fn read_idx(path: &Path) -> Result<IdxArray, IdxError> {
    let bytes = read_idx_bytes(path)?;
    parse_idx(&bytes).map_err(|message| IdxError::Format {
        path: path.to_path_buf(),
        message,
    })
}

/// The IDX bytes of a file, gunzipped when it starts with the gzip magic.
pub fn read_idx_bytes(path: &Path) -> Result<Vec<u8>, IdxError> {
    let bytes = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw).map_err(
        |e| IdxError::Format {
            path: path.to_path_buf(),
            message: format!("gzip stream is damaged ({e}); expected a gzipped IDX file"),
        },
    )?;
    Ok(raw)
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
    if bytes.len() < 4 {
        return Err(format!(
            "truncated header: expected at least 4 bytes, found {}",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad magic number: expected 00 00 in the first two bytes, found {:02x} {:02x}",
            bytes[0], bytes[1]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "unsupported element type 0x{:02x}: expected 0x08 (unsigned byte)",
            bytes[2]
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err("expected at least one dimension, found 0".into());
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {ndims} dimensions need {header} bytes, found {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let found = bytes.len() - header;
    if found < expected {
        return Err(format!(
            "truncated data: dimensions {dims:?} need {expected} bytes after the header, found {found}"
        ));
    }
    if found > expected {
        return Err(format!(
            "{} unexpected trailing bytes after the {expected} bytes that dimensions {dims:?} describe",
            found - expected
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
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
}
