//! What the machine has, compared with what a command would allocate, before it allocates.

use anyhow::{Result, bail};

/// Compares an estimate with the memory this machine has available.
pub fn check_memory(needed: f64, what: &str, advice: &str) -> Result<()> {
    use ember_model::memory::human_bytes;
    if let Some(available) = ember_io::available_memory_bytes()
        && needed > available as f64
    {
        bail!(
            "{what} needs about {}, but this machine has {} available; {advice}",
            human_bytes(needed),
            human_bytes(available as f64)
        );
    }
    Ok(())
}
