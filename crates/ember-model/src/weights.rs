//! UNet weights as a safetensors file, readable from Python's `safetensors` and by `ember sample`.
//!
//! Tensor names are the module paths, joined with dots, e.g.
//! `class_embedding.weight` (`[num_classes + 1, embed_dim]`, last row = null class),
//! `down.0.stages.0.res.conv1.weight` (`[out, in, 3, 3]`), `mid.attn.qkv.bias`, `conv_out.weight`.
//! Every tensor is little-endian F32. The file's `__metadata__` records `format = "pt"`-style
//! provenance: `producer = "ember"` and the number of classes.

use crate::UNet;
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
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

/// Serialises a model's weights in the safetensors format.
pub fn to_safetensors(model: &UNet) -> Vec<u8> {
    let tensors = named_tensors(model);
    let mut header = serde_json::Map::new();
    let mut metadata = serde_json::Map::new();
    metadata.insert("producer".into(), "ember".into());
    metadata.insert("num_classes".into(), model.num_classes().to_string().into());
    header.insert("__metadata__".into(), metadata.into());
    let mut offset = 0usize;
    for (name, shape, data) in &tensors {
        let end = offset + 4 * data.len();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    // Pad the header with spaces so the data starts 8-byte aligned, as the format recommends.
    while !(8 + header.len()).is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, data) in &tensors {
        for v in data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// A parsed safetensors file: name -> (shape, values).
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Parses safetensors bytes holding F32 tensors.
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<TensorMap, WeightsError> {
    let bad = |message: String| WeightsError::Format {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() < 8 {
        return Err(bad(format!(
            "{} bytes, shorter than the 8-byte header length",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let data = bytes
        .get(8 + n..)
        .ok_or_else(|| bad(format!("header of {n} bytes runs past the end of the file")))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(format!("header: {e}")))?;
    let mut out = TensorMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let tensor = |message: String| WeightsError::Tensor {
            path: path.to_path_buf(),
            name: name.clone(),
            message,
        };
        if info["dtype"] != "F32" {
            return Err(tensor(format!("dtype {}, expected F32", info["dtype"])));
        }
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())
            .map_err(|e| tensor(format!("shape: {e}")))?;
        let [start, end]: [usize; 2] = serde_json::from_value(info["data_offsets"].clone())
            .map_err(|e| tensor(format!("data_offsets: {e}")))?;
        let raw = data
            .get(start..end)
            .filter(|r| r.len() == 4 * shape.iter().product::<usize>())
            .ok_or_else(|| {
                tensor(format!(
                    "data_offsets [{start}, {end}] do not fit shape {shape:?} and the file"
                ))
            })?;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (shape, values));
    }
    Ok(out)
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
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tensors = parse_safetensors(&bytes, path)?;
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

    #[test]
    fn round_trip_is_exact_and_names_are_module_paths() {
        let device = Device::flex();
        let model = tiny(8).init(&device, 3);
        let dir = std::env::temp_dir().join(format!("ember-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        save_safetensors(&model, &path).unwrap();
        let names: Vec<String> = named_tensors(&model).into_iter().map(|t| t.0).collect();
        assert!(names.contains(&"class_embedding.weight".to_string()));
        assert!(names.contains(&"down.0.stages.0.res.conv1.weight".to_string()));

        let loaded = load_safetensors(tiny(8).init(&device, 4), &path).unwrap();
        assert_eq!(named_tensors(&loaded), named_tensors(&model));

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
}
