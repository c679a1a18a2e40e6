//! CPU time of a child process (user + system, from `/proc/PID/stat`), the
//! lines a backup directory holds, and optional `perf` profiles of a run.
//!
//! CPU time per acknowledged lead is the steady figure on a shared machine:
//! other processes slow a run down but do not make it spend more CPU.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/PID/stat`'s times (`getconf CLK_TCK`).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Seconds of CPU (user + system, all threads) process `pid` has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

/// CPU used by `pid` from `start` on, in microseconds per `n` units.
pub fn us_per(pid: u32, start: f64, n: u64) -> f64 {
    (cpu_secs(pid) - start) * 1e6 / n.max(1) as f64
}

/// Counts the lines of the `*.jsonl` files in a backup directory, reading
/// only what was appended since the last call.
#[derive(Default)]
pub struct BackupLines {
    dir: PathBuf,
    seen: HashMap<PathBuf, (u64, u64)>,
}

impl BackupLines {
    pub fn new(dir: &Path) -> Self {
        BackupLines {
            dir: dir.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    pub fn count(&mut self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut buf = vec![0u8; 1 << 16];
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "jsonl") {
                continue;
            }
            let (offset, lines) = self.seen.entry(path.clone()).or_default();
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                *offset += n as u64;
                *lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        self.seen.values().map(|(_, l)| l).sum()
    }

    /// Waits until the backup holds `n` lines; the time it took, or None
    /// after `limit`.
    pub async fn wait_for(&mut self, n: u64, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.count() >= n {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// `perf record` attached to a process for one run (`--perf DIR`).
pub struct Profile {
    child: Child,
    data: PathBuf,
}

impl Profile {
    /// Starts recording `pid` into `DIR/NAME.perf.data` when `dir` is set.
    pub fn start(dir: Option<&Path>, name: &str, pid: u32) -> Option<Profile> {
        let dir = dir?;
        std::fs::create_dir_all(dir).ok()?;
        let data = dir.join(format!("{name}.perf.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "999", "-g", "-q", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("perf could not be started ({e}); install linux-perf"))
            .ok()?;
        Some(Profile { child, data })
    }

    /// Stops recording and writes `NAME.txt` beside the data: CPU by thread,
    /// then the hottest functions (self time).
    pub fn finish(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let report = |sort: &str| {
            Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "-g",
                    "none",
                    "--sort",
                    sort,
                ])
                .arg("-i")
                .arg(&self.data)
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let keep = |s: String, n: usize| {
            s.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(n)
                .map(|l| l.trim_end().to_string() + "\n")
                .collect::<String>()
        };
        let text = format!(
            "## CPU by thread\n{}\n## hottest functions (self)\n{}",
            keep(report("comm"), 20),
            keep(report("dso,symbol"), 60)
        );
        let txt = self.data.with_extension("").with_extension("txt");
        let _ = std::fs::write(&txt, text);
        println!(
            "profile: {} ({}; `perf report -i {}` for call graphs)",
            txt.display(),
            self.data.display(),
            self.data.display()
        );
    }
}
