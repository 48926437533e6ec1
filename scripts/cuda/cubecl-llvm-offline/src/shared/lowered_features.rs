//! Narrowing a device's advertised features to what upstream's LLVM backend lowers (port of
//! upstream's `shared::lowered_features`, NVPTX part).
//!
//! `cubecl-cuda` calls [`restrict_features`] only when its default backend is LLVM, i.e. when
//! it was built without the `cpp` feature. The port is kept faithful anyway so a build that
//! reaches it advertises exactly what an upstream build would (and then fails clearly at the
//! first kernel compilation, see `PlironCompiler`).

use cubecl_core::ir::{ComplexKind, DeviceProperties, ElemType, FloatKind, OpaqueType};
#[cfg(feature = "nvptx")]
use cubecl_core::ir::{IntKind, UIntKind};

/// The GPU target a device's features are narrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    #[cfg(feature = "nvptx")]
    Nvptx,
}

/// Narrows `props` to what the LLVM backend lowers for `target`: the matrix forms the target
/// has register shapes for, minus everything no LLVM target lowers.
pub fn restrict_features(props: &mut DeviceProperties, target: GpuTarget) {
    match target {
        #[cfg(feature = "nvptx")]
        GpuTarget::Nvptx => retain_nvptx_matrix_forms(props),
    }
    remove_unlowered_features(props);
}

#[cfg(feature = "nvptx")]
fn retain_nvptx_matrix_forms(props: &mut DeviceProperties) {
    let f16 = ElemType::Float(FloatKind::F16);
    let bf16 = ElemType::Float(FloatKind::BF16);
    let tf32 = ElemType::Float(FloatKind::TF32);
    let f32 = ElemType::Float(FloatKind::F32);
    let i32 = ElemType::Int(IntKind::I32);
    let is_byte = |ty: ElemType| {
        matches!(
            ty,
            ElemType::Int(IntKind::I8) | ElemType::UInt(UIntKind::U8)
        )
    };

    let matmul = &mut props.features.matmul;

    // WMMA-style (cmma): f16 x f16 -> f16|f32, bf16 x bf16 -> f32, tf32 x tf32 -> f32 at 16x16x8.
    matmul.cmma.retain(|c| {
        let same_operands = c.b_type == c.a_type;
        match c.a_type {
            t if t == f16 => same_operands && (c.cd_type == f16 || c.cd_type == f32),
            t if t == bf16 => same_operands && c.cd_type == f32,
            t if t == tf32 => same_operands && c.cd_type == f32 && (c.m, c.n, c.k) == (16, 16, 8),
            _ => false,
        }
    });

    // `mma.sync`: f16|bf16 pairs -> f32, any signed/unsigned byte pairing -> i32, tf32 -> f32
    // at m16n8k4 and m16n8k8.
    matmul.mma.retain(|c| {
        let half_pair = (c.a_type == f16 || c.a_type == bf16) && c.b_type == c.a_type;
        let floats = half_pair && c.cd_type == f32;
        let bytes = is_byte(c.a_type) && is_byte(c.b_type) && c.cd_type == i32;
        let tf32_form = c.a_type == tf32
            && c.b_type == tf32
            && c.cd_type == f32
            && (c.m, c.n) == (16, 8)
            && (c.k == 4 || c.k == 8);
        floats || bytes || tf32_form
    });
    // The manual mma family, ldmatrix and stmatrix stay advertised, as upstream.
}

/// What no LLVM GPU target lowers.
fn remove_unlowered_features(props: &mut DeviceProperties) {
    let bf16 = ElemType::Float(FloatKind::BF16);

    let matmul = &mut props.features.matmul;
    matmul.cube_mma = Default::default();
    matmul.scaled_mma = Default::default();
    matmul.cmma_tensor_addressing = false;
    let no_matrix_forms_left = matmul.cmma.is_empty() && matmul.mma.is_empty();
    if no_matrix_forms_left {
        props.hardware.num_tensor_cores = None;
        props.hardware.min_tensor_cores_dim = None;
    }

    // TMA, thread-block clusters, async copies and the barriers behind them.
    props.features.tma = Default::default();
    props.features.cube_cluster = false;
    props.features.copy_async = false;
    let types = &mut props.features.types;
    types.opaque.remove(&OpaqueType::TensorMap);
    types.opaque.remove(&OpaqueType::Barrier);

    // Atomics: no bf16 ones, and only scalar (vector size 1) ones.
    types
        .atomic
        .retain(|ty, _| ty.elem_type() != bf16 && ty.vector_size() == 1);

    // Complex numbers are lowered by the C++ backends only.
    types.complex.clear();
    types.elem.remove(&ElemType::Complex(ComplexKind::C32));
    types.elem.remove(&ElemType::Complex(ComplexKind::C64));
}

#[cfg(all(test, feature = "nvptx"))]
mod tests {
    use super::*;
    use cubecl_core::ir::features::{Features, MmaConfig};
    use cubecl_core::ir::{DeviceIdentity, HardwareProperties, MemoryDeviceProperties, VectorSize};

    fn props() -> DeviceProperties {
        let hardware = HardwareProperties {
            load_width: 128,
            vector_register_count: None,
            plane_size_min: 32,
            plane_size_max: 32,
            max_bindings: 32,
            max_shared_memory_size: 65536,
            max_cube_count: (u32::MAX, u16::MAX as u32, u16::MAX as u32),
            max_units_per_cube: 1024,
            max_cube_dim: (1024, 1024, 1024),
            num_streaming_multiprocessors: None,
            num_tensor_cores: Some(4),
            min_tensor_cores_dim: Some(16),
            num_cpu_cores: None,
            last_level_cache_size: None,
            max_vector_size: VectorSize::MAX,
            cube_mma_reserved_shared_memory: 0,
        };
        DeviceProperties::new(
            Features::default(),
            MemoryDeviceProperties::new(u64::MAX, 256),
            hardware,
            cubecl_core::profile::TimingMethod::Device,
            DeviceIdentity {
                name: "test".to_string(),
                fingerprint: "test".to_string(),
                physical: None,
            },
        )
    }

    fn cfg(a: ElemType, cd: ElemType, m: u32, n: u32, k: u32) -> MmaConfig {
        MmaConfig {
            a_type: a,
            b_type: a,
            cd_type: cd,
            m,
            n,
            k,
        }
    }

    #[test]
    fn tf32_keeps_only_the_nvvm_shapes() {
        let tf32 = ElemType::Float(FloatKind::TF32);
        let f32 = ElemType::Float(FloatKind::F32);
        let forms = [(16, 16, 8), (16, 8, 4), (16, 8, 8), (16, 8, 16)]
            .map(|(m, n, k)| cfg(tf32, f32, m, n, k));
        let mut p = props();
        p.features.matmul.cmma.extend(forms);
        p.features.matmul.mma.extend(forms);
        restrict_features(&mut p, GpuTarget::Nvptx);
        assert_eq!(p.features.matmul.cmma.len(), 1);
        assert!(p.features.matmul.cmma.contains(&cfg(tf32, f32, 16, 16, 8)));
        assert_eq!(p.features.matmul.mma.len(), 2);
        assert!(p.features.matmul.mma.contains(&cfg(tf32, f32, 16, 8, 4)));
        assert!(p.features.matmul.mma.contains(&cfg(tf32, f32, 16, 8, 8)));
        assert_eq!(p.hardware.num_tensor_cores, Some(4));
    }

    #[test]
    fn bf16_keeps_f32_accumulators_and_no_forms_drops_tensor_cores() {
        let bf16 = ElemType::Float(FloatKind::BF16);
        let f32 = ElemType::Float(FloatKind::F32);
        let mut p = props();
        p.features
            .matmul
            .cmma
            .extend([cfg(bf16, f32, 16, 16, 16), cfg(bf16, bf16, 16, 16, 16)]);
        p.features
            .matmul
            .mma
            .extend([cfg(bf16, f32, 16, 8, 16), cfg(bf16, bf16, 16, 8, 16)]);
        restrict_features(&mut p, GpuTarget::Nvptx);
        assert_eq!(p.features.matmul.cmma.len(), 1);
        assert_eq!(p.features.matmul.mma.len(), 1);

        let mut empty = props();
        restrict_features(&mut empty, GpuTarget::Nvptx);
        assert_eq!(empty.hardware.num_tensor_cores, None);
        assert_eq!(empty.hardware.min_tensor_cores_dim, None);
    }
}
