//! The compiler types `cubecl-cuda` names. They have upstream's shape, so `cubecl-cuda`
//! compiles unchanged against them, but there is no LLVM behind [`PlironCompiler`]: asking it
//! for a kernel returns [`CompilationError::Generic`] with [`NO_LLVM_MESSAGE`].

#[cfg(feature = "nvptx")]
pub mod lowered_features;

#[cfg(feature = "nvptx")]
use crate::nvptx::ptx_version::PtxVersion;
use crate::target::LlvmTarget;
use cubecl_core::ir::amd::GfxArch;
#[cfg(feature = "nvptx")]
use cubecl_core::ir::nvidia::SmArch;
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::compiler::{CompilationError, Compiler};
use cubecl_runtime::config::compilation::F16Evaluation;
use cubecl_runtime::kernel::{BufferIOAttr, KernelDefinition};

/// What every attempt to use the LLVM backend in this build reports.
pub const NO_LLVM_MESSAGE: &str = "this build of CubeCL has no LLVM backend: it was built \
offline with the cubecl-llvm stand-in (scripts/cuda/cubecl-llvm-offline), which cannot lower \
kernels through pliron/LLVM. Use the CUDA C++/NVRTC path instead: build with the `cuda-cpp` \
feature (cubecl's `cuda-cpp`, i.e. cubecl-cuda's `cpp`), as scripts/cuda/build.sh does, or build \
with internet access without the stand-in patch to get the real cubecl-llvm.";

/// The LLVM compiler. Same fields as upstream; here it only reports that there is no LLVM.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    pub target: LlvmTarget,
}

/// Options of the LLVM compiler. Same fields as upstream so struct literals in dependents
/// (`PlironOptions { sm_arch, ptx_version, grid_constants, ..Default::default() }`) compile.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// Minimum CPU buffer alignment, including view offsets; a power of two, or `None`.
    pub cpu_buffer_alignment: Option<u32>,
    /// AMDGPU architecture, `None` for other targets.
    pub arch: Option<GfxArch>,
    /// How the CPU target evaluates f16.
    pub f16_evaluation: F16Evaluation,
    /// NVPTX architecture, `None` for other targets.
    #[cfg(feature = "nvptx")]
    pub sm_arch: Option<SmArch>,
    /// PTX version to emit, `None` for the oldest the architecture accepts.
    #[cfg(feature = "nvptx")]
    pub ptx_version: Option<PtxVersion>,
    /// Whether scalars and static metadata go in the kernel parameter block.
    pub grid_constants: bool,
}

/// A PTX module as upstream's NVPTX target produces it. Never produced here, but `cubecl-cuda`
/// reads its fields on its LLVM path, so they are all present.
#[cfg(feature = "nvptx")]
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX assembly.
    pub ptx: Vec<core::ffi::c_char>,
    /// Kernel entry point symbol.
    pub entrypoint: String,
    /// IR for logging and cache keys.
    pub ir: String,
    /// Shared memory required per launch, in bytes.
    pub shared_memory_size: usize,
    /// Buffer access modes in binding order.
    pub io: Vec<BufferIOAttr>,
}

/// What the LLVM compiler produces. Upstream also has a `Jit` variant holding the CPU JIT
/// engine, which needs LLVM and is left out (the CPU runtime is not supported here).
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    #[cfg(feature = "nvptx")]
    NvptxCode(NvptxModule),
}

impl core::fmt::Display for PlironArtifact {
    #[cfg_attr(not(feature = "nvptx"), allow(unused_variables))]
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // `*self` and `ref`: without `nvptx` the enum is empty, and only a place of the enum
        // type itself (not a reference to it) can be matched with no arms.
        match *self {
            #[cfg(feature = "nvptx")]
            PlironArtifact::NvptxCode(ref module) => f.write_str(&module.ir),
        }
    }
}

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn buffer_io(repr: &Self::Representation) -> Option<Vec<BufferIOAttr>> {
        match *repr {
            #[cfg(feature = "nvptx")]
            PlironArtifact::NvptxCode(ref module) => Some(module.io.clone()),
        }
    }

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &Self::CompilationOptions,
    ) -> Result<Self::Representation, CompilationError> {
        // An error rather than a panic: CubeCL's server channel turns a panic into a log line,
        // while an error reaches the caller through the buffers it leaves unwritten. It is also
        // printed once, so it is seen even if an autotuner sets the error aside as a refusal.
        static REPORTED: std::sync::Once = std::sync::Once::new();
        REPORTED.call_once(|| eprintln!("error: {NO_LLVM_MESSAGE}"));
        Err(CompilationError::Generic {
            reason: NO_LLVM_MESSAGE.to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    fn extension(&self) -> &'static str {
        match self.target {
            LlvmTarget::Cpu => "plir",
            #[cfg(feature = "nvptx")]
            LlvmTarget::Nvptx => "ll",
        }
    }

    fn lang_tag(&self) -> &'static str {
        match self.target {
            LlvmTarget::Cpu => "mlir",
            #[cfg(feature = "nvptx")]
            LlvmTarget::Nvptx => "llvm",
        }
    }
}
