//! Reading a process's CPU time and resident memory from /proc: this process (the memory guard,
//! `/stats`) or the server under test (the load tool).

/// Clock ticks per second of /proc/PID/stat times (USER_HZ: 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds used so far, user and system apart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User-space seconds.
    pub user: f64,
    /// Kernel seconds.
    pub system: f64,
}

/// CPU times of process `pid` (all its threads).
pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the state field.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some(CpuTimes {
        user: user / TICKS_PER_SEC,
        system: system / TICKS_PER_SEC,
    })
}

/// Resident memory of process `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Resident memory of this process in bytes (0 where /proc is unavailable).
pub fn own_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| vm_rss(&s))
        .unwrap_or(0)
}

/// `VmRSS` from the text of /proc/PID/status, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        use std::time::{Duration, Instant};
        let pid = std::process::id();
        // Burn CPU until the kernel has charged some: it counts in ticks (4 ms at 250 Hz), and a
        // fixed loop can finish inside one in a release build (it did: 0 ticks).
        let t0 = Instant::now();
        let charged = loop {
            let burn = Instant::now();
            while burn.elapsed() < Duration::from_millis(20) {
                std::hint::black_box(burn.elapsed());
            }
            let t = super::cpu_times(pid).unwrap();
            if t.user + t.system > 0.0 || t0.elapsed() > Duration::from_secs(10) {
                break t.user + t.system;
            }
        };
        assert!(charged > 0.0, "no CPU time read after 10 s of spinning");
        assert!(super::rss_bytes(pid).unwrap() > 100_000);
    }
}
