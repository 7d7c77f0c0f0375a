//! A private PostgreSQL cluster under the data directory for `keel up` when `DATABASE_URL` is
//! unset, run from the server binaries installed on the machine. `initdb` and `postgres` refuse
//! to run as root, so as root they run as an unprivileged user (`postgres`, or `KEEL_PG_USER`).

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid, User};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SUPERUSER: &str = "keel";
const DATABASE: &str = "keel";

pub struct EmbeddedPg {
    bindir: PathBuf,
    root: PathBuf,
    run_as: Option<(Uid, Gid)>,
    port: u16,
    password: String,
    /// Whether this process started the server (and so stops it).
    started: bool,
}

/// Where the server binaries are: `KEEL_PG_BINDIR`, then `initdb` on PATH, then
/// `pg_config --bindir`, then the highest `/usr/lib/postgresql/*/bin`.
pub fn find_bindir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let has_bins = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("postgres").is_file();
    if let Some(d) = explicit {
        if has_bins(d) {
            return Ok(d.to_path_buf());
        }
        bail!("KEEL_PG_BINDIR={} has no initdb, pg_ctl and postgres", d.display());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Debian links /usr/bin or /usr/local/bin entries to the versioned directory.
                let real = fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(p) = real.parent() {
                    candidates.push(p.to_path_buf());
                }
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort();
    candidates.extend(versioned.into_iter().rev().map(|(_, p)| p));
    candidates.into_iter().find(|d| has_bins(d)).ok_or_else(|| {
        anyhow::anyhow!(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH, by pg_config, \
             or under /usr/lib/postgresql/*/bin.\n\
             Install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
             macOS: `brew install postgresql@16`), or set KEEL_PG_BINDIR to their directory, \
             or set DATABASE_URL to use an existing database."
        )
    })
}

impl EmbeddedPg {
    /// Initialises the cluster on first use and starts it (or finds it already running).
    pub fn start(data_dir: &Path, bindir: &Path) -> anyhow::Result<EmbeddedPg> {
        fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(data_dir)?;
        let root = data_dir.join("pg");
        let run_as = unprivileged_user()?;
        fs::create_dir_all(root.join("run"))?;
        let password_file = data_dir.join("pg-password");
        let (password, _) = crate::secrets::load_or_create(&password_file)?;
        if let Some((uid, gid)) = run_as {
            for dir in [root.clone(), root.join("run")] {
                std::os::unix::fs::chown(&dir, Some(uid.as_raw()), Some(gid.as_raw()))
                    .with_context(|| format!("cannot chown {}", dir.display()))?;
            }
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
        let mut pg = EmbeddedPg { bindir: bindir.to_path_buf(), root, run_as, port: 0, password, started: false };
        if !pg.pgdata().join("PG_VERSION").is_file() {
            pg.initdb()?;
        }
        match pg.running_port() {
            Some(port) => {
                pg.port = port;
                eprintln!("keel: reusing the PostgreSQL already running on port {port} ({})", pg.pgdata().display());
            }
            None => {
                pg.port = pick_port(&data_dir.join("pg-port"))?;
                pg.pg_ctl_start()?;
                pg.started = true;
                let _ = fs::write(data_dir.join("pg-port"), pg.port.to_string());
            }
        }
        Ok(pg)
    }

    fn pgdata(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser URL of the `keel` database (created by `ensure_database`).
    pub fn database_url(&self) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{DATABASE}", self.password, self.port)
    }

    fn maintenance_url(&self) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/postgres", self.password, self.port)
    }

    /// Creates the `keel` database on first start.
    pub async fn ensure_database(&self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.maintenance_url())
            .await
            .context("cannot reach the embedded PostgreSQL")?;
        keel_store::ops::create_database_if_missing(&mut conn, DATABASE).await?;
        conn.close().await?;
        Ok(())
    }

    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(self.bindir.join(bin));
        c.current_dir(&self.root).env_remove("PGDATA").env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid.as_raw()).gid(gid.as_raw());
        }
        // Its own process group: a Ctrl-C in the terminal reaches Keel, which then stops the
        // server after the requests in flight are done.
        c.process_group(0);
        c
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let pwfile = self.root.join("initdb-pw");
        fs::write(&pwfile, &self.password)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
        eprintln!("keel: creating a PostgreSQL cluster in {}", self.pgdata().display());
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.pgdata())
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("cannot run initdb")?;
        let _ = fs::remove_file(&pwfile);
        if !out.status.success() {
            bail!("initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The port of a server already running on this data directory, if any.
    fn running_port(&self) -> Option<u16> {
        let status = self.command("pg_ctl").arg("status").arg("-D").arg(self.pgdata()).output().ok()?;
        if !status.status.success() {
            return None;
        }
        let pid = fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        pid.lines().nth(3)?.trim().parse().ok()
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200",
            self.port,
            self.root.join("run").display()
        );
        let out = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.pgdata())
            .arg("-l")
            .arg(self.root.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts])
            .stdin(Stdio::null())
            .output()
            .context("cannot run pg_ctl")?;
        if !out.status.success() {
            bail!(
                "PostgreSQL did not start (see {}): {}",
                self.root.join("postgres.log").display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops the server if this process started it (fast mode: sessions end, data is flushed).
    pub fn stop(&self) -> anyhow::Result<()> {
        if !self.started {
            return Ok(());
        }
        self.stop_with(StopMode::Fast)
    }

    /// Stops the server in `mode` whoever started it (`keel chaos` stops its private cluster
    /// both ways, then starts it again with `restart`).
    pub fn stop_with(&self, mode: StopMode) -> anyhow::Result<()> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let out = self.command("pg_ctl").arg("stop").arg("-D").arg(self.pgdata()).args(["-m", mode, "-w"]).output()?;
        if !out.status.success() {
            bail!("pg_ctl stop -m {mode} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Starts a server stopped by `stop_with` again, on the same port (after `-m immediate`,
    /// PostgreSQL recovers from its WAL first).
    pub fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }
}

impl EmbeddedPg {
    /// A hot standby of this cluster under `data_dir`, streaming from it on a port of its own:
    /// `pg_basebackup -R` (which writes the standby's connection settings), then a start. With
    /// `apply_delay`, the standby replays each commit that long after the primary made it
    /// (`recovery_min_apply_delay`): a lagging replica on purpose, for tests and the bench.
    pub fn start_standby(
        &self,
        data_dir: &Path,
        apply_delay: Option<std::time::Duration>,
    ) -> anyhow::Result<EmbeddedPg> {
        fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(data_dir)?;
        let root = data_dir.join("pg");
        fs::create_dir_all(root.join("run"))?;
        if let Some((uid, gid)) = self.run_as {
            for dir in [root.clone(), root.join("run")] {
                std::os::unix::fs::chown(&dir, Some(uid.as_raw()), Some(gid.as_raw()))
                    .with_context(|| format!("cannot chown {}", dir.display()))?;
            }
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
        let standby = EmbeddedPg {
            bindir: self.bindir.clone(),
            root,
            run_as: self.run_as,
            port: pick_port(&data_dir.join("pg-port"))?,
            password: self.password.clone(),
            started: true,
        };
        let out = standby
            .command("pg_basebackup")
            .arg("-D")
            .arg(standby.pgdata())
            .args(["-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-U", SUPERUSER])
            .arg("-p")
            .arg(self.port.to_string())
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null())
            .output()
            .context("cannot run pg_basebackup")?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(delay) = apply_delay {
            use std::io::Write;
            let mut conf = fs::OpenOptions::new().append(true).open(standby.pgdata().join("postgresql.auto.conf"))?;
            writeln!(conf, "recovery_min_apply_delay = '{}ms'", delay.as_millis())?;
        }
        standby.pg_ctl_start()?;
        Ok(standby)
    }
}

impl EmbeddedPg {
    /// Makes a standby the primary (`pg_ctl promote`), as a failover manager does.
    pub fn promote(&self) -> anyhow::Result<()> {
        let out = self.command("pg_ctl").arg("promote").arg("-w").arg("-D").arg(self.pgdata()).output()?;
        if !out.status.success() {
            bail!("pg_ctl promote failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The postmaster's process id while it runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }
}

/// How `pg_ctl stop` ends the server's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are ended and the server shuts down cleanly.
    Fast,
    /// The server quits at once, as in a crash; the next start recovers from the WAL.
    Immediate,
}

/// `None` when not root; as root, the unprivileged user to run the server as.
fn unprivileged_user() -> anyhow::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let name = std::env::var("KEEL_PG_USER").unwrap_or_else(|_| "postgres".into());
    let user = User::from_name(&name)?.ok_or_else(|| {
        anyhow::anyhow!(
            "Keel runs as root and PostgreSQL refuses to; no user {name:?} exists to run it as. \
             Create one (`useradd --system postgres`) or set KEEL_PG_USER to another unprivileged user."
        )
    })?;
    if user.uid.is_root() {
        bail!("KEEL_PG_USER={name} is root; PostgreSQL needs an unprivileged user");
    }
    Ok(Some((user.uid, user.gid)))
}

/// The last port used when it is still free, else any free port on 127.0.0.1.
fn pick_port(remembered: &Path) -> anyhow::Result<u16> {
    if let Some(p) = fs::read_to_string(remembered).ok().and_then(|s| s.trim().parse::<u16>().ok())
        && TcpListener::bind(("127.0.0.1", p)).is_ok()
    {
        return Ok(p);
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
