//! RSS and CPU time of a process, from `/proc/<pid>/status` and
//! `/proc/<pid>/stat`, sampled once a second while a run goes on.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;

use crate::now_unix;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Unix time of the reading.
    pub t: f64,
    /// Resident set size (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far (VmHWM), KiB.
    pub hwm_kib: u64,
    /// User + system CPU time since the process started, seconds.
    pub cpu_s: f64,
}

/// Reads `/proc/<pid>` once; `None` once the process is gone.
pub fn read(pid: u32, clk_tck: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (rss_kib, hwm_kib) = parse_status(&status);
    Some(Sample {
        t: now_unix(),
        rss_kib,
        hwm_kib,
        cpu_s: parse_cpu_ticks(&stat)? as f64 / clk_tck,
    })
}

/// VmRSS and VmHWM in KiB.
fn parse_status(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime in clock ticks. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after its closing `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Time series per named process.
pub type Series = BTreeMap<String, Vec<Sample>>;

/// Samples the named processes every `interval` until dropped.
pub struct Sampler {
    series: Arc<Mutex<Series>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `(name, pid)` pairs.
    pub fn start(procs: Vec<(String, u32)>, clk_tck: f64, interval: Duration) -> Self {
        let series: Arc<Mutex<Series>> = Arc::new(Mutex::new(
            procs.iter().map(|(n, _)| (n.clone(), Vec::new())).collect(),
        ));
        let s = series.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let readings: Vec<(String, Sample)> = procs
                    .iter()
                    .filter_map(|(n, pid)| read(*pid, clk_tck).map(|r| (n.clone(), r)))
                    .collect();
                let mut m = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (n, r) in readings {
                    m.entry(n).or_default().push(r);
                }
            }
        });
        Self { series, task }
    }

    /// Takes one more reading of every process now, stops, returns the series.
    pub fn finish(self, procs: &[(String, u32)], clk_tck: f64) -> Series {
        self.task.abort();
        let mut m = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (n, pid) in procs {
            if let Some(r) = read(*pid, clk_tck) {
                m.entry(n.clone()).or_default().push(r);
            }
        }
        m
    }
}

/// What a window of a series says: peak RSS, and CPU seconds spent in it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    /// Largest VmRSS sampled in the window, MiB.
    pub peak_rss_mib: f64,
    /// CPU seconds between the first and the last sample of the window.
    pub cpu_s: f64,
    /// Samples in the window.
    pub samples: usize,
}

/// Usage within `[from, to]` (Unix seconds).
pub fn usage(series: &[Sample], from: f64, to: f64) -> Usage {
    let inside: Vec<&Sample> = series
        .iter()
        .filter(|s| s.t >= from - 0.5 && s.t <= to + 0.5)
        .collect();
    let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
        return Usage::default();
    };
    Usage {
        peak_rss_mib: inside.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        cpu_s: last.cpu_s - first.cpu_s,
        samples: inside.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tskylet\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status(status), (10240, 20480));
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id(), 100.0).expect("own /proc entry");
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
    }

    #[test]
    fn usage_in_a_window() {
        let s = |t: f64, rss: u64, cpu: f64| Sample {
            t,
            rss_kib: rss,
            hwm_kib: rss,
            cpu_s: cpu,
        };
        let series = [
            s(0.0, 1024, 0.0),
            s(1.0, 4096, 1.0),
            s(2.0, 2048, 1.5),
            s(10.0, 9999, 9.0),
        ];
        let u = usage(&series, 0.0, 2.0);
        assert_eq!((u.peak_rss_mib, u.cpu_s, u.samples), (4.0, 1.5, 3));
    }
}
