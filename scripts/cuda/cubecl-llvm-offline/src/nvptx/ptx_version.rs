//! The PTX ISA version a driver loads (port of upstream's `nvptx::ptx_version`).
//!
//! `cubecl-cuda` calls [`PtxVersion::for_driver`] for every device it opens and puts the answer
//! in its compilation options and, for the LLVM backend only, in its cache namespace. With the
//! C++ backend it is carried but not used to compile; it must still give upstream's answers so
//! the options (and anything derived from them) match a build with the real crate.

use core::fmt;
use std::ffi::CString;

/// A PTX ISA version, spelled as the NVPTX target feature spells it: PTX 8.7 is `87`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PtxVersion(u32);

/// For each PTX version, the first CUDA driver release (as `cuDriverGetVersion` reports it:
/// 12.8 is `12080`) that loads it; newest first. Same table as upstream, which follows clang's
/// mapping and stops at PTX 9.3.
const FIRST_DRIVER_FOR_PTX: [(i32, u32); 24] = [
    (13030, 93),
    (13020, 92),
    (13010, 91),
    (13000, 90),
    (12090, 88),
    (12080, 87),
    (12050, 85),
    (12040, 84),
    (12030, 83),
    (12020, 82),
    (12010, 81),
    (12000, 80),
    (11080, 78),
    (11070, 77),
    (11060, 76),
    (11050, 75),
    (11040, 74),
    (11030, 73),
    (11020, 72),
    (11010, 71),
    (11000, 70),
    (10020, 65),
    (10010, 64),
    (10000, 63),
];

impl PtxVersion {
    /// The newest PTX version that a CUDA driver of version `driver` loads, or `None` for a
    /// driver older than CUDA 10.0.
    pub fn for_driver(driver: i32) -> Option<Self> {
        for (first_driver, ptx) in FIRST_DRIVER_FOR_PTX {
            if driver >= first_driver {
                return Some(PtxVersion(ptx));
            }
        }
        None
    }

    /// The NVPTX target feature selecting this version, e.g. `+ptx87`.
    pub fn target_feature(self) -> CString {
        CString::new(format!("+{self}")).expect("a PTX feature name contains no NUL byte")
    }
}

impl fmt::Display for PtxVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ptx{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::PtxVersion;

    #[test]
    fn matches_upstream_answers() {
        assert_eq!(PtxVersion::for_driver(12080), Some(PtxVersion(87)));
        assert_eq!(PtxVersion::for_driver(12060), Some(PtxVersion(85)));
        assert_eq!(PtxVersion::for_driver(13000), Some(PtxVersion(90)));
        assert_eq!(PtxVersion::for_driver(13050), Some(PtxVersion(93)));
        assert_eq!(PtxVersion::for_driver(10000), Some(PtxVersion(63)));
        assert_eq!(PtxVersion::for_driver(9020), None);
    }

    #[test]
    fn formats_like_the_target_feature() {
        assert_eq!(PtxVersion(87).to_string(), "ptx87");
        assert_eq!(PtxVersion(87).target_feature().as_c_str(), c"+ptx87");
    }
}
