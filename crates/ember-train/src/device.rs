//! Device selection: the flex CPU backend by default, CUDA when built with `--features cuda`.

use burn::prelude::*;
use ember_config::DeviceKind;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "this ember binary was built without CUDA support; rebuild with `cargo build --release --features cuda` or use --device cpu"
    )]
    CudaNotBuilt,
}

/// The Burn device for a configured kind.
pub fn select_device(kind: DeviceKind) -> Result<Device, DeviceError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(DeviceError::CudaNotBuilt),
    }
}
