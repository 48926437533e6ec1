//! The targets upstream's LLVM backend compiles for. Kept so `PlironCompiler { target }` reads
//! the same; none of them can actually be compiled for in this stand-in.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    /// Upstream's JIT for the CPU runtime (`cubecl-cpu`).
    #[default]
    Cpu,
    /// PTX for the CUDA runtime.
    #[cfg(feature = "nvptx")]
    Nvptx,
}

impl LlvmTarget {
    /// Whether the target provides a hardware launch grid.
    pub fn is_gpu(self) -> bool {
        !matches!(self, LlvmTarget::Cpu)
    }
}
