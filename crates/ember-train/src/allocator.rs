//! glibc's allocator returns every large buffer to the OS (`mmap` above 128 KiB-32 MiB, and
//! heap trimming), so each training step faults in and zero-fills its ~0.4 GB of fresh tensor
//! buffers again: ~110k page faults per step of the default model, 11 % of its CPU time in the
//! kernel (scripts/bench/NOTES.md). Keeping freed memory for reuse cut the step time by 14-16 %
//! at the same peak memory there. Buffers above 32 MiB (glibc's largest mmap threshold), such as
//! a skip concatenation of the 128-image guided batch, were still mapped and faulted in afresh
//! each time: they now come from the heap too (`M_MMAP_MAX = 0`).

/// Raises glibc's mmap and trim thresholds and stops it mapping large buffers on their own, so
/// tensor buffers are reused instead of returned to the OS after every step. Set
/// `EMBER_MALLOC_DEFAULTS=1` to keep glibc's defaults (for measuring the difference). No-op on
/// other platforms.
pub fn keep_freed_memory() {
    if std::env::var_os("EMBER_MALLOC_DEFAULTS").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate.
    unsafe {
        // 32 MiB, glibc's largest mmap threshold: buffers below it come from the heap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // Do not give the top of the heap back to the OS until 2 GiB of it are free.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // Nor map larger buffers on their own: glibc still falls back to mmap when the heap
        // cannot grow.
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}
