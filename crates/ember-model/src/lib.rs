//! Ember's model crate: the class-conditional UNet, the noise schedule, the training loss and
//! the host-side random streams that training and sampling share.
//!
//! - `unet.rs`: the UNet; `init.rs`: seeded initialisation of any Burn module (UNet and
//!   classifier), and the seeded perturbation tests use; `schedule.rs`, `loss.rs`: the diffusion
//!   process and its losses; `rng.rs`: the `(seed, stream, index)` random streams;
//!   `weights.rs`: safetensors import/export;
//!   `memory.rs`: memory estimates; `hash.rs`: the checksum of files Ember writes.

pub mod init;
pub mod loss;
pub mod memory;
pub mod rng;
pub mod schedule;
pub mod unet;
pub mod weights;

pub use init::with_backend_rng;
pub use loss::{epsilon_mse, min_snr_weights, weighted_mse};
pub use schedule::NoiseSchedule;
pub use unet::{UNet, UNetConfig, labels_tensor, null_class};
