//! NVPTX target. Only the PTX version table is here: it is what the CUDA runtime reads while
//! setting up a device and keying its compilation cache, whichever backend compiles.

pub mod ptx_version;
