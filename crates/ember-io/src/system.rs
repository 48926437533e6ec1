//! What the machine offers, read before a large allocation is attempted.

/// Bytes of memory this process can still use: the kernel's `MemAvailable`, or the cgroup's
/// limit or the process's address-space limit (`ulimit -v`) when lower. `None` where none can
/// be read.
pub fn available_memory_bytes() -> Option<u64> {
    let found = [system_available(), address_space_limit()];
    found.into_iter().flatten().min()
}

/// `RLIMIT_AS`, when one is set.
fn address_space_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given and nothing else.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
        (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

fn system_available() -> Option<u64> {
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
