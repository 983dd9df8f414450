//! CPU time per process, from `/proc/<pid>/stat`: where a benchmark's cores
//! went (each service, PostgreSQL's processes together, the load generator).

use std::collections::HashMap;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`: 100 on
/// every Linux the benchmarks run on).
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of a process so far, in ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start
    // past its closing parenthesis. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Every running process whose command name is `name` (PostgreSQL's backends
/// and workers are all `postgres`).
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

/// A reading of CPU time of named processes (and of every `postgres`
/// process, and of this one).
pub struct CpuSample {
    per_name: HashMap<String, u64>,
    /// Ticks of each postgres process: backends that exited between two
    /// samples are lost, those that started count from zero.
    postgres: HashMap<u32, u64>,
}

impl CpuSample {
    pub fn take(processes: &[(String, Option<u32>)]) -> Self {
        let mut per_name: HashMap<String, u64> = processes
            .iter()
            .map(|(name, pid)| (name.clone(), pid.and_then(ticks).unwrap_or(0)))
            .collect();
        per_name.insert(
            "load generator".to_string(),
            ticks(std::process::id()).unwrap_or(0),
        );
        let postgres = pids_named("postgres")
            .into_iter()
            .filter_map(|pid| Some((pid, ticks(pid)?)))
            .collect();
        Self { per_name, postgres }
    }

    /// Each process's share of one core between `self` and `later`, in
    /// percent (two cores busy: 200%), named; PostgreSQL's as one line.
    pub fn shares(&self, later: &CpuSample, seconds: f64) -> Vec<(String, f64)> {
        let percent = |ticks: u64| ticks as f64 / TICKS_PER_SEC / seconds * 100.0;
        let mut shares: Vec<(String, f64)> = later
            .per_name
            .iter()
            .map(|(name, t)| {
                let before = self.per_name.get(name).copied().unwrap_or(0);
                (name.clone(), percent(t.saturating_sub(before)))
            })
            .collect();
        let postgres: u64 = later
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        shares.push(("postgres (all)".to_string(), percent(postgres)));
        shares.sort_by(|a, b| a.0.cmp(&b.0));
        shares
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_when_it_spins() {
        let before = CpuSample::take(&[]);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let shares = before.shares(&CpuSample::take(&[]), 0.3);
        let own = shares
            .iter()
            .find(|(name, _)| name == "load generator")
            .map(|(_, s)| *s)
            .unwrap();
        assert!(own > 50.0, "spinning 0.3 s showed {own}% of a core");
    }
}
