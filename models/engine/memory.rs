//! The process's resident memory, from Linux's `/proc` (elsewhere: unknown, and limits on it
//! are not enforced).

/// Resident memory now, in bytes.
pub fn rss() -> Option<u64> {
    status_kb("VmRSS:")
}

/// The peak resident memory since the start or the last [`reset_peak`], in bytes.
pub fn peak_rss() -> Option<u64> {
    status_kb("VmHWM:")
}

/// Starts a new peak (Linux ≥ 4.0: writing 5 to `clear_refs` resets the high-water mark), so a
/// benchmark can measure each run on its own.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
