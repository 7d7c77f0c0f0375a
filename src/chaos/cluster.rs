//! The processes `keel chaos` runs and breaks: a private PostgreSQL cluster and one Keel server.

use crate::embedded::{EmbeddedPg, StopMode};
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// A PostgreSQL cluster of its own in the run's directory, on a free port.
pub(crate) struct Cluster {
    pg: Arc<EmbeddedPg>,
    /// The owner's (a superuser's) URL of the `keel` database.
    pub(crate) owner_url: String,
}

impl Cluster {
    pub(crate) async fn start(dir: &Path, bindir: &Path) -> anyhow::Result<Cluster> {
        let (dir, bindir) = (dir.to_path_buf(), bindir.to_path_buf());
        let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&dir, &bindir)).await??;
        pg.ensure_database().await?;
        Ok(Cluster { owner_url: pg.database_url(), pg: Arc::new(pg) })
    }

    pub(crate) async fn stop(&self, mode: StopMode) -> anyhow::Result<()> {
        let pg = self.pg.clone();
        tokio::task::spawn_blocking(move || pg.stop_with(mode)).await?
    }

    /// Starts the stopped cluster again; tries a few times (a start right after an immediate
    /// stop can find the old postmaster still leaving).
    pub(crate) async fn restart(&self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            let pg = self.pg.clone();
            match tokio::task::spawn_blocking(move || pg.restart()).await? {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last.expect("five attempts")).context("the private PostgreSQL did not start again")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nothing of the run outlives it, not even after an error or a panic.
        let _ = self.pg.stop_with(StopMode::Immediate);
    }
}

/// One Keel server (`<keel-bin> serve`) on a fixed port, killed and started again at will.
pub(crate) struct Keel {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    /// Starts after the first, and exits nobody asked for.
    pub(crate) restarts: std::sync::atomic::AtomicU64,
    pub(crate) unplanned_exits: std::sync::atomic::AtomicU64,
}

impl Keel {
    pub(crate) fn new(bin: PathBuf, env: Vec<(String, String)>, log: PathBuf) -> Keel {
        Keel {
            bin,
            env,
            log,
            child: Mutex::new(None),
            restarts: Default::default(),
            unplanned_exits: Default::default(),
        }
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        // Only the settings given here: none of the caller's KEEL_* or DATABASE_URL.
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str()
                && (k.starts_with("KEEL_") || k == "DATABASE_URL")
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .process_group(0);
        cmd.spawn().with_context(|| format!("cannot run {}", self.bin.display()))
    }

    pub(crate) async fn start(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().await;
        *child = Some(self.spawn()?);
        Ok(())
    }

    /// SIGKILL, then a new process at once.
    pub(crate) async fn kill_and_restart(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().await;
        if let Some(c) = child.as_mut() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        *child = Some(self.spawn()?);
        self.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// SIGTERM, wait for the process to drain and exit (at most `patience`, then SIGKILL), then a
    /// new process. Returns how long the old one took to exit.
    pub(crate) async fn term_and_restart(&self, patience: Duration) -> anyhow::Result<Duration> {
        let mut child = self.child.lock().await;
        let took = match child.as_mut() {
            Some(c) => terminate(c, patience).await,
            None => Duration::ZERO,
        };
        *child = Some(self.spawn()?);
        self.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(took)
    }

    /// A process that exited on its own (e.g. it could not reach the database at start-up) is
    /// started again.
    pub(crate) async fn supervise(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().await;
        if let Some(c) = child.as_mut()
            && c.try_wait()?.is_some()
        {
            self.unplanned_exits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *child = Some(self.spawn()?);
            self.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// SIGTERM and wait; no new process.
    pub(crate) async fn stop(&self, patience: Duration) {
        if let Some(mut c) = self.child.lock().await.take() {
            terminate(&mut c, patience).await;
        }
    }
}

async fn terminate(c: &mut Child, patience: Duration) -> Duration {
    let began = Instant::now();
    if let Some(pid) = c.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(patience, c.wait()).await.is_err() {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    began.elapsed()
}

/// Waits until `url` answers 200 (Keel's `/readyz`), at most `deadline`.
pub(crate) async fn wait_ready(http: &reqwest::Client, url: &str, deadline: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("{url} did not answer 200 within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
