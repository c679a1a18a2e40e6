//! Child processes under test: the leadrelay release binary and the bare
//! ceiling server, with their resident memory sampled from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
        .unwrap_or(0)
}

/// A running child process listening on `addr`.
pub struct Proc {
    pub child: Child,
    pub addr: String,
}

impl Proc {
    /// Resident set size in MiB (VmRSS).
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_listening(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nothing listens on {addr} after 30 s")
}

/// Starts `leadrelay serve` with `config` (written to `dir`).
pub async fn leadrelay(bin: &Path, dir: &Path, config: &str, role: &str) -> anyhow::Result<Proc> {
    leadrelay_with_env(bin, dir, config, role, &[]).await
}

/// Like [`leadrelay`], with extra environment variables (credentials).
pub async fn leadrelay_with_env(
    bin: &Path,
    dir: &Path,
    config: &str,
    role: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let path = dir.join("bench.toml");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join(format!("leadrelay-{role}-{port}.log")))?;
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", &addr, "--role", role])
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let p = Proc { child, addr };
    if role != "worker" {
        wait_listening(&p.addr).await?;
    } else {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(p)
}

/// An admin API key (`leadrelay keys create`) for the configuration at
/// `config`.
pub fn admin_key(bin: &Path, config: &Path, env: &[(&str, &str)]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .args(["keys", "create", "--name", "bench", "--role", "admin"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "leadrelay keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let key = text.trim();
    anyhow::ensure!(!key.is_empty(), "leadrelay keys create printed no key");
    Ok(key.to_string())
}

/// Starts this benchmark binary as the bare 202 server (the ceiling).
pub async fn bare_server() -> anyhow::Result<Proc> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let me: PathBuf = std::env::current_exe()?;
    let child = Command::new(me)
        .args(["bare-server", "--listen", &addr])
        .stdout(Stdio::null())
        .spawn()?;
    let p = Proc { child, addr };
    wait_listening(&p.addr).await?;
    Ok(p)
}

/// The peak resident set size of a process, sampled every 100 ms.
pub struct PeakRss {
    kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    pub fn sample(pid: u32) -> PeakRss {
        let kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let peak = kib.clone();
        let task = tokio::spawn(async move {
            loop {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        PeakRss { kib, task }
    }

    /// Stops sampling; the peak in MiB.
    pub fn stop(self) -> f64 {
        self.task.abort();
        self.kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    }
}
