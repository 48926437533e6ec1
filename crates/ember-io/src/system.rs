//! What the machine offers, read before a large allocation is attempted.

/// Bytes of memory this process can still use: the kernel's `MemAvailable`, or the cgroup's
/// limit when that is lower. `None` where neither can be read (not Linux).
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("MemAvailable:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn linux_reports_some_memory() {
        let bytes = super::available_memory_bytes().expect("/proc/meminfo is readable");
        assert!(bytes > 16 * 1024 * 1024, "{bytes}");
    }
}
