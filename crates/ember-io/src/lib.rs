//! Ember's files, without tensors: the bottom floor of the workspace (no Burn), shared by the
//! model, data, training, sampling, monitoring and evaluation crates.
//!
//! - `atomic.rs`: [`write_atomic`] (temporary sibling, fsync, rename, fsync of the folder) and
//!   [`sync_dir`], so a reader or a power cut never sees half a file.
//! - `owned.rs`: the marker file Ember writes into every folder it creates (run directories,
//!   classifier folders), and [`prepare_owned_dir`], the one place that decides whether a folder
//!   may be replaced: Ember deletes only what it made.
//! - `image.rs`: [`GridImage`], 8-bit grey or RGB pixels, and its PNG encoding and decoding.

mod atomic;
mod image;
mod owned;

pub use atomic::{sync_dir, write_atomic};
pub use image::{GridImage, ImageError, read_png, write_png};
pub use owned::{
    MARKER_FILE, OwnedDirError, OwnerKind, is_owned_by_ember, owner_of, prepare_owned_dir,
};
