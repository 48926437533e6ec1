//! UNet weights as a safetensors file, readable from Python's `safetensors` and by `ember sample`.
//!
//! Tensor names are the module paths, joined with dots, e.g.
//! `class_embedding.weight` (`[num_classes + 1, embed_dim]`, last row = null class),
//! `down.0.stages.0.res.conv1.weight` (`[out, in, 3, 3]`), `mid.attn.qkv.bias`, `conv_out.weight`.
//! Every tensor is little-endian F32. The file's `__metadata__` records `format = "pt"`-style
//! provenance: `producer = "ember"` and the number of classes.
//!
//! Files are read and written by the `safetensors` crate, the reference implementation. Its
//! `SafeTensors::deserialize` bounds the header length (100 MB) and checks it against the file,
//! requires the tensors' `data_offsets` to tile the data exactly, and multiplies each shape out
//! with checked arithmetic, so no number in a header is trusted before it is checked. Files are
//! read whole, and [`read_bounded`] refuses one over [`MAX_FILE_BYTES`] before allocating.

use crate::UNet;
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest safetensors file Ember reads: 4 GiB, a billion F32 values. Files are read whole,
/// so this bounds what a file can make Ember allocate. Ember's shipped configs make UNets of a
/// few MB and the FID Inception is about 95 MB; the config does not cap the model size, so the
/// bound is generous rather than tied to one config.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: {size} bytes, more than the {limit} bytes Ember reads from a safetensors file"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: not a valid safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// Named F32 tensors of a module, in visiting order.
pub fn named_tensors(model: &UNet) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut collect = Collect::default();
    model.visit(&mut collect);
    collect.tensors
}

#[derive(Default)]
struct Collect {
    path: Vec<String>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let shape = value.dims().to_vec();
        let data = value
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 parameters");
        self.tensors.push((self.path.join("."), shape, data));
    }
}

/// One F32 tensor as the `safetensors` crate writes it: its shape and little-endian bytes.
struct F32Bytes {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for F32Bytes {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises a model's weights in the safetensors format.
pub fn to_safetensors(model: &UNet) -> Vec<u8> {
    let tensors = named_tensors(model).into_iter().map(|(name, shape, data)| {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        (name, F32Bytes { shape, bytes })
    });
    let metadata = HashMap::from([
        ("producer".to_string(), "ember".to_string()),
        ("num_classes".to_string(), model.num_classes().to_string()),
    ]);
    // `serialize` fails only on a header over 100 MB (about a million tensors) or data that
    // does not match its shape; neither can come from a module's parameters.
    safetensors::serialize(tensors, Some(metadata)).expect("a UNet's parameters serialise")
}

/// A parsed safetensors file: name -> (shape, values).
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads `path` whole, refusing it before allocating when it holds more than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = |size| WeightsError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::new();
    usize::try_from(size)
        .ok()
        .and_then(|n| bytes.try_reserve_exact(n).ok())
        .ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {size} bytes to read it"),
            ))
        })?;
    // The file may have grown since its size was taken: read at most one byte past the limit.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads a safetensors file of F32 tensors (at most [`MAX_FILE_BYTES`]).
pub fn read_safetensors(path: &Path) -> Result<TensorMap, WeightsError> {
    parse_safetensors(&read_bounded(path, MAX_FILE_BYTES)?, path)
}

/// Parses safetensors bytes holding F32 tensors; `path` names the file in errors.
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<TensorMap, WeightsError> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| format_error(e, bytes, path))?;
    // Sorted, so that the first bad tensor reported does not depend on hashing.
    let views: BTreeMap<_, _> = file.iter().collect();
    let mut out = TensorMap::new();
    for (name, view) in views {
        if view.dtype() != Dtype::F32 {
            return Err(WeightsError::Tensor {
                path: path.to_path_buf(),
                name: name.to_string(),
                message: format!("dtype {}, expected F32", view.dtype()),
            });
        }
        // `deserialize` has checked that the data holds exactly shape-product F32 values.
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// The `__metadata__` strings of safetensors bytes (empty when the file has none).
pub fn parse_metadata(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>, WeightsError> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format_error(e, bytes, path))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// The crate's error as a [`WeightsError::Format`], with the header length the file declares
/// and its size where the error is about them.
fn format_error(error: SafeTensorError, bytes: &[u8], path: &Path) -> WeightsError {
    let declared = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let message = match (&error, declared) {
        (SafeTensorError::HeaderTooSmall, _) => format!(
            "{} bytes, shorter than the 8-byte header length",
            bytes.len()
        ),
        (SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength, Some(n)) => {
            format!(
                "{error}: the first 8 bytes declare a {n}-byte header, the file has {} bytes",
                bytes.len()
            )
        }
        (SafeTensorError::MetadataIncompleteBuffer, _) => format!(
            "{error}: the tensors' data_offsets do not end at the end of the file (truncated?)"
        ),
        _ => error.to_string(),
    };
    WeightsError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes `model`'s weights to a safetensors file.
pub fn save_safetensors(model: &UNet, path: &Path) -> Result<(), WeightsError> {
    std::fs::write(path, to_safetensors(model)).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a safetensors file into `model`: every parameter must be present with its shape.
pub fn load_safetensors(model: UNet, path: &Path) -> Result<UNet, WeightsError> {
    let mut tensors = read_safetensors(path)?;
    let mut assign = Assign {
        path: Vec::new(),
        tensors: &mut tensors,
        file: path,
        error: None,
    };
    let model = model.map(&mut assign);
    if let Some(e) = assign.error {
        return Err(e);
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(WeightsError::Tensor {
            path: path.to_path_buf(),
            name: extra.clone(),
            message: "not a parameter of this model (is the file from another model shape?)".into(),
        });
    }
    Ok(model)
}

struct Assign<'a> {
    path: Vec<String>,
    tensors: &'a mut TensorMap,
    file: &'a Path,
    error: Option<WeightsError>,
}

impl ModuleMapper for Assign<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let name = self.path.join(".");
        let expected = param.lazy_shape().dims::<D>().to_vec();
        match self.tensors.remove(&name) {
            Some((shape, values)) if shape == expected => {
                let device = param.lazy_device();
                param.map(|_| Tensor::from_data(TensorData::new(values, shape), &device))
            }
            Some((shape, _)) => {
                self.error = Some(WeightsError::Tensor {
                    path: self.file.to_path_buf(),
                    name,
                    message: format!("shape {shape:?}, but the model expects {expected:?}"),
                });
                param
            }
            None => {
                self.error = Some(WeightsError::Tensor {
                    path: self.file.to_path_buf(),
                    name,
                    message: "missing from the file".into(),
                });
                param
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::tests::tiny_width as tiny;
    use serde_json::json;

    /// A fresh folder for one test.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-weights-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Safetensors bytes by hand: the 8-byte header length `n` (which may lie), `header`, `data`.
    fn crafted(n: u64, header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
        let mut out = n.to_le_bytes().to_vec();
        out.extend_from_slice(&serde_json::to_vec(header).unwrap());
        out.extend_from_slice(data);
        out
    }

    /// Bytes with an honest header length.
    fn honest(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
        let n = serde_json::to_vec(header).unwrap().len() as u64;
        crafted(n, header, data)
    }

    /// The error that parsing `bytes` gives, as the user reads it.
    fn parse_error(bytes: &[u8]) -> WeightsError {
        parse_safetensors(bytes, Path::new("crafted.safetensors")).unwrap_err()
    }

    /// `error` is a format error naming the file, and its message.
    fn format_message(error: WeightsError) -> String {
        let message = error.to_string();
        assert!(matches!(error, WeightsError::Format { .. }), "{message}");
        assert!(
            message.starts_with("crafted.safetensors: not a valid safetensors file"),
            "{message}"
        );
        message
    }

    /// The file layout Ember wrote before it used the `safetensors` crate: tensors in module
    /// order, the header a JSON object padded with spaces to 8-byte alignment.
    fn legacy_bytes(model: &UNet) -> Vec<u8> {
        let tensors = named_tensors(model);
        let mut header = serde_json::Map::new();
        let metadata = json!({"producer": "ember", "num_classes": model.num_classes().to_string()});
        header.insert("__metadata__".into(), metadata);
        let mut offset = 0usize;
        for (name, shape, data) in &tensors {
            let end = offset + 4 * data.len();
            let info = json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]});
            header.insert(name.clone(), info);
            offset = end;
        }
        let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
        while !(8 + header.len()).is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        for (_, _, data) in &tensors {
            out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        }
        out
    }

    /// Writes `tensors` as an F32 safetensors file.
    fn write_tensors(path: &Path, tensors: &TensorMap) {
        let views = tensors.iter().map(|(name, (shape, values))| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let shape = shape.clone();
            (name, F32Bytes { shape, bytes })
        });
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    #[test]
    fn round_trip_is_exact_and_names_are_module_paths() {
        let device = Device::flex();
        let model = tiny(8).init(&device, 3);
        let dir = temp_dir("round-trip");
        let path = dir.join("m.safetensors");
        save_safetensors(&model, &path).unwrap();
        let names: Vec<String> = named_tensors(&model).into_iter().map(|t| t.0).collect();
        assert!(names.contains(&"class_embedding.weight".to_string()));
        assert!(names.contains(&"down.0.stages.0.res.conv1.weight".to_string()));

        let loaded = load_safetensors(tiny(8).init(&device, 4), &path).unwrap();
        assert_eq!(named_tensors(&loaded), named_tensors(&model));
        let bytes = std::fs::read(&path).unwrap();
        let metadata = parse_metadata(&bytes, &path).unwrap();
        assert_eq!(metadata["producer"], "ember");
        assert_eq!(metadata["num_classes"], "3");

        let err = load_safetensors(tiny(16).init(&device, 0), &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.safetensors") && err.contains("shape"),
            "{err}"
        );

        std::fs::write(&path, &to_safetensors(&model)[..100]).unwrap();
        let err = load_safetensors(tiny(8).init(&device, 0), &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid safetensors file"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_in_the_earlier_layout_still_load() {
        let device = Device::flex();
        let model = tiny(8).init(&device, 3);
        let dir = temp_dir("legacy");
        let path = dir.join("old.safetensors");
        std::fs::write(&path, legacy_bytes(&model)).unwrap();
        let loaded = load_safetensors(tiny(8).init(&device, 4), &path).unwrap();
        assert_eq!(named_tensors(&loaded), named_tensors(&model));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_header_length_near_u64_max_is_a_format_error() {
        let header = json!({});
        // u64::MAX - 7 and - 6 made the old parser's `8 + n` wrap to 0 and 1.
        for n in [u64::MAX, u64::MAX - 6, u64::MAX - 7, 100_000_000, 64] {
            let message = format_message(parse_error(&crafted(n, &header, &[])));
            assert!(
                message.contains(&format!("declare a {n}-byte header, the file has 10 bytes")),
                "{message}"
            );
        }
        let message = format_message(parse_error(&[1, 2, 3]));
        assert!(message.contains("3 bytes, shorter than"), "{message}");
    }

    #[test]
    fn a_shape_whose_product_overflows_is_refused() {
        // 2^32 * 2^32 wrapped to 0 in the old parser, which then matched 0 data bytes.
        let header = json!({"w": {"dtype": "F32", "shape": [1u64 << 32, 1u64 << 32], "data_offsets": [0, 0]}});
        let message = format_message(parse_error(&honest(&header, &[])));
        assert!(message.contains("overflow"), "{message}");
        // Product fits, bytes (shape times 32 bits) do not.
        let header = json!({"w": {"dtype": "F32", "shape": [1u64 << 62], "data_offsets": [0, 0]}});
        format_message(parse_error(&honest(&header, &[])));
        // Offsets that disagree with the shape.
        let header = json!({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 4]}});
        format_message(parse_error(&honest(&header, &[0; 4])));
    }

    #[test]
    fn offsets_that_sum_past_u64_max_are_refused() {
        // Eight tensors of 2^61 - 4 bytes each end at 2^64 - 32; adding the header length to
        // that overflows inside the crate (safetensors#808): it must wrap and refuse the file.
        let size = (1u64 << 61) - 4;
        let mut header = serde_json::Map::new();
        for i in 0..8u64 {
            let offsets = [i * size, (i + 1) * size];
            let info = json!({"dtype": "F32", "shape": [size / 4], "data_offsets": offsets});
            header.insert(format!("t{i}"), info);
        }
        let message = format_message(parse_error(&honest(&header.into(), &[])));
        assert!(message.contains("truncated?"), "{message}");
    }

    #[test]
    fn a_truncated_file_is_a_format_error() {
        let model = tiny(8).init(&Device::flex(), 3);
        let bytes = to_safetensors(&model);
        for cut in [bytes.len() - 4, 100, 8, 5] {
            let message = format_message(parse_error(&bytes[..cut]));
            assert!(!message.contains("panicked"), "{message}");
        }
    }

    #[test]
    fn a_tensor_of_another_dtype_is_named() {
        let header = json!({
            "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "half": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]},
        });
        let err = parse_error(&honest(&header, &[0; 8]));
        assert!(matches!(err, WeightsError::Tensor { ref name, .. } if name == "half"));
        assert_eq!(
            err.to_string(),
            "crafted.safetensors: tensor `half`: dtype F16, expected F32"
        );
    }

    #[test]
    fn a_missing_extra_or_misshapen_tensor_is_named_with_its_shapes() {
        let device = Device::flex();
        let model = tiny(8).init(&device, 3);
        let dir = temp_dir("tensors");
        let path = dir.join("edited.safetensors");
        let full = parse_safetensors(&to_safetensors(&model), &path).unwrap();
        let load = |tensors: &TensorMap| {
            write_tensors(&path, tensors);
            load_safetensors(tiny(8).init(&device, 0), &path)
                .unwrap_err()
                .to_string()
        };
        let prefix = format!("{}: tensor ", path.display());

        let mut missing = full.clone();
        missing.remove("conv_out.bias");
        let err = load(&missing);
        assert_eq!(
            err,
            format!("{prefix}`conv_out.bias`: missing from the file")
        );

        let mut misshapen = full.clone();
        misshapen.insert("conv_out.bias".into(), (vec![2], vec![0.0; 2]));
        let err = load(&misshapen);
        assert_eq!(
            err,
            format!("{prefix}`conv_out.bias`: shape [2], but the model expects [1]")
        );

        let mut extra = full;
        extra.insert("head.weight".into(), (vec![1], vec![0.0]));
        let err = load(&extra);
        assert!(
            err.starts_with(&format!("{prefix}`head.weight`: not a parameter")),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = temp_dir("limit");
        let path = dir.join("big.safetensors");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let err = read_bounded(&path, 99).unwrap_err();
        assert!(matches!(
            err,
            WeightsError::TooLarge {
                size: 100,
                limit: 99,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "{}: 100 bytes, more than the 99 bytes Ember reads from a safetensors file",
                path.display()
            )
        );
        assert_eq!(read_bounded(&path, 100).unwrap().len(), 100);
        let missing = read_bounded(&dir.join("absent"), 100).unwrap_err();
        assert!(matches!(missing, WeightsError::Io { .. }), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
