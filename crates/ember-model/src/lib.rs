//! Ember's model crate: the class-conditional UNet, the noise schedule, the training loss and
//! the host-side random streams that training and sampling share.

pub mod hash;
pub mod loss;
pub mod memory;
pub mod rng;
pub mod schedule;
pub mod unet;
pub mod weights;

pub use loss::{epsilon_mse, min_snr_weights, weighted_mse};
pub use schedule::NoiseSchedule;
pub use unet::{UNet, UNetConfig, labels_tensor, null_class, with_backend_rng};
