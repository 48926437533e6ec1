//! Ember's files, without tensors: the bottom floor of the workspace (no Burn), shared by the
//! model, data, training, sampling, monitoring and evaluation crates.
//!
//! - `atomic.rs`: [`write_atomic`] (temporary sibling, fsync, rename, fsync of the folder),
//!   [`replace_dir`] (a finished folder swapped in before the old one is deleted) and
//!   [`sync_dir`], so a reader or a power cut never sees half a file or a missing folder.
//! - `owned.rs`: the marker file Ember writes into every folder it creates (run directories,
//!   classifier folders), and [`prepare_owned_dir`], the one place that decides whether a folder
//!   may be replaced: Ember deletes only what it made.
//! - `checksum.rs`: the CRC-32 checksum of the files Ember writes and of dataset fingerprints.
//! - `system.rs`: [`available_memory_bytes`], what a memory estimate is compared against.
//! - `image.rs`: [`GridImage`], 8-bit grey or RGB pixels, and its PNG encoding and decoding.

mod atomic;
pub mod checksum;
mod image;
mod owned;
mod system;

pub use atomic::{replace_dir, sync_dir, write_atomic};
pub use image::{GridImage, ImageError, read_png, write_png};
pub use owned::{
    MARKER_FILE, OwnedDirError, OwnerKind, is_owned_by_ember, owner_of, prepare_owned_dir,
};
pub use system::available_memory_bytes;
