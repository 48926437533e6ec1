//! Offline stand-in for `cubecl-llvm` 0.11.3.
//!
//! # Why this crate exists
//!
//! `cubecl-cuda` 0.11.x (what `burn-cuda` 0.22.1 runs on) always depends on `cubecl-llvm`,
//! which can lower kernels to PTX through pliron and LLVM. Its build script uses
//! `tracel-llvm-bundler` to download a prebuilt LLVM from the internet, so
//! `cargo build --features cuda` fails on a machine that can reach crates.io but nothing else.
//!
//! `cubecl-cuda` has a second backend: with its `cpp` feature (`cubecl/cuda-cpp`) kernels are
//! transpiled to CUDA C++ and compiled at run time by NVRTC, which `cudarc` loads from the CUDA
//! installation. That path needs only a few small items from `cubecl-llvm`, none of them backed
//! by LLVM. This crate provides exactly those items, with the same paths and signatures:
//!
//! - [`nvptx::ptx_version::PtxVersion`]: ported from upstream (pure table lookup);
//! - [`shared::lowered_features::{GpuTarget, restrict_features}`](shared::lowered_features):
//!   ported from upstream (pure edits of `DeviceProperties`);
//! - [`LlvmTarget`], [`PlironCompiler`], [`PlironOptions`], [`PlironArtifact`],
//!   [`NvptxModule`]: the same types, but [`PlironCompiler`] has no LLVM behind it and every
//!   compilation returns an error saying so (and prints it once to stderr).
//!
//! `scripts/cuda/build.sh` swaps it in only for offline builds, through
//! `--config 'patch.crates-io.cubecl-llvm.path="..."'`, together with the `cuda-cpp` feature
//! so the runtime never selects the LLVM backend. A build with internet access can leave the
//! patch out and get the real crate.
//!
//! Not supported: the CPU runtime (`cubecl-cpu`, which needs pliron's JIT engine) and the HIP
//! runtime (`cubecl-hip`, feature `amdgpu`). Neither is in Ember's CUDA build.

#[cfg(feature = "amdgpu")]
compile_error!(
    "the offline cubecl-llvm stand-in (scripts/cuda/cubecl-llvm-offline) only supports the \
     CUDA runtime; the HIP runtime (cubecl-hip, feature `amdgpu`) needs the real cubecl-llvm \
     and therefore internet access to download LLVM"
);

#[cfg(feature = "nvptx")]
pub mod nvptx;
pub mod shared;
pub mod target;

#[cfg(feature = "nvptx")]
pub use shared::NvptxModule;
pub use shared::{PlironArtifact, PlironCompiler, PlironOptions};
pub use target::LlvmTarget;
