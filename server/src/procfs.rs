//! This process as Linux's /proc describes it: the open-file limit, CPU
//! time and memory. Read from text files, so no FFI is needed; every
//! reader answers `None` where /proc is not available. Shared by the
//! server (its `MAX_CONNECTIONS` default, `/metrics`, `/stats`, the stats
//! line) and connflood (its descriptor check and its own CPU and memory in
//! every report).

/// Clock ticks per second of /proc's CPU times (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SEC: u64 = 100;

/// The soft limit on open files (RLIMIT_NOFILE), from /proc/self/limits.
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU time used so far, user and system, in clock ticks
/// ([`TICKS_PER_SEC`]), from /proc/self/stat.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    parse_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime and stime (fields 14 and 15) of a `/proc/PID/stat` line, counted
/// after the parenthesised command name, which may hold spaces and ')'.
pub fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Resident memory now, in pages (the second field of /proc/self/statm).
pub fn resident_pages() -> Option<u64> {
    std::fs::read_to_string("/proc/self/statm").ok()?.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory, KiB (`VmHWM` in /proc/self/status).
pub fn peak_resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (a b) c) R 1 2 3 4 5 6 7 8 9 10 700 31 0 0 20 0 1";
        assert_eq!(parse_stat_cpu(line), Some((700, 31)));
        assert_eq!(parse_stat_cpu("42 (x) R 1 2"), None);
        assert_eq!(parse_stat_cpu("no parenthesis"), None);
    }

    #[test]
    fn this_process_is_read() {
        assert!(open_file_limit().is_some_and(|n| n > 0));
        assert!(cpu_ticks().is_some());
        assert!(resident_pages().is_some_and(|n| n > 0));
        assert!(peak_resident_kib().is_some_and(|n| n > 0));
    }
}
