//! Device selection: the flex CPU backend by default, CUDA when built with `--features cuda`.

use burn::prelude::*;
use ember_config::DeviceKind;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "this ember binary was built without CUDA support; rebuild with `cargo build --release --features cuda` (offline: scripts/cuda/build.sh) or use --device cpu"
    )]
    CudaNotBuilt,
    #[error("CUDA device 0 is not usable: {0}")]
    CudaUnavailable(String),
}

/// The Burn device for a configured kind.
pub fn select_device(kind: DeviceKind) -> Result<Device, DeviceError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => probe_cuda(),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(DeviceError::CudaNotBuilt),
    }
}

/// Creates CUDA device 0 and moves one tensor through it. Without a driver or GPU, CubeCL panics
/// on its server thread; this turns that into an error with the first panic message.
#[cfg(feature = "cuda")]
fn probe_cuda() -> Result<Device, DeviceError> {
    use std::sync::{Arc, Mutex};
    let first_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let record = first_panic.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let mut slot = record.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            *slot = Some(message);
        }
    }));
    let probe = std::panic::catch_unwind(|| {
        let device = Device::cuda(0);
        let _ = Tensor::<1>::zeros([1], &device).into_data();
        device
    });
    std::panic::set_hook(previous);
    probe.map_err(|_| {
        let message = first_panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        DeviceError::CudaUnavailable(message.unwrap_or_else(|| "the CUDA runtime panicked".into()))
    })
}
