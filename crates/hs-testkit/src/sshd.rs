//! A throwaway OpenSSH server on 127.0.0.1 for the `sftp://` and `scp://` backend tests.
//!
//! [`Sshd::start`] makes a private directory with a new ed25519 host key and client key
//! (`ssh-keygen`), an `authorized_keys` file and its own `sshd_config` (listen on
//! 127.0.0.1 and a free port, public-key authentication only, `PermitRootLogin
//! prohibit-password`, and `Subsystem sftp internal-sftp` unless [`SshdOptions::sftp`] is
//! false), runs `/usr/sbin/sshd -D -e -f CONFIG`, and waits until it sends its banner. It
//! also writes a `known_hosts` file with the host key. The server is killed and the
//! directory removed on drop (kept when `HS_KEEP_TEST_DIRS` is set).
//!
//! ```no_run
//! let sshd = hs_testkit::Sshd::start(hs_testkit::SshdOptions::default())?;
//! let url = sshd.url("sftp", "/tmp/repo");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the OpenSSH server binary is expected.
pub const SSHD_PATH: &str = "/usr/sbin/sshd";

/// How to configure a test sshd.
#[derive(Clone, Debug)]
pub struct SshdOptions {
    /// Offer the SFTP subsystem (`Subsystem sftp internal-sftp`). False for scp:// tests.
    pub sftp: bool,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions { sftp: true }
    }
}

/// A running test sshd; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    dir: PathBuf,
    port: u16,
    user: String,
    child: Option<Child>,
}

/// Whether an sshd binary is installed.
pub fn sshd_available() -> bool {
    Path::new(SSHD_PATH).is_file()
}

/// Start an sshd, or, when the binary is missing: panic under `CI=true`, else print a skip
/// notice naming `test` and return `None`.
pub fn sshd_or_skip(test: &str, opts: SshdOptions) -> Option<Sshd> {
    if !sshd_available() {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{SSHD_PATH} is missing (CI=true): install it with apt-get install -y openssh-server");
        }
        eprintln!("SKIP {test}: {SSHD_PATH} is not installed (apt-get install -y openssh-server)");
        return None;
    }
    match Sshd::start(opts) {
        Ok(s) => Some(s),
        Err(e) => panic!("starting sshd for {test} failed: {e}"),
    }
}

fn run(cmd: &mut Command, what: &str) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{what}: could not run {:?}: {e}", cmd.get_program()),
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn keygen(path: &Path, comment: &str) -> io::Result<()> {
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        "ssh-keygen",
    )
}

fn current_user() -> io::Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    let u = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !u.is_empty() {
        Ok(u)
    } else {
        Err(io::Error::other("id -un did not name the current user"))
    }
}

impl Sshd {
    /// Generate keys, write the config, start sshd and wait for its banner.
    pub fn start(opts: SshdOptions) -> io::Result<Sshd> {
        if !sshd_available() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SSHD_PATH} not found: apt-get install -y openssh-server"),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("hs-sshd-")
            .tempdir()?
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let mut sshd = Sshd {
            dir: dir.clone(),
            port: 0,
            user: current_user()?,
            child: None,
        };
        keygen(&dir.join("host_key"), "hs-testkit host")?;
        keygen(&dir.join("other_host_key"), "hs-testkit other host")?;
        keygen(&dir.join("client_key"), "hs-testkit client")?;
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        fs::set_permissions(
            dir.join("authorized_keys"),
            fs::Permissions::from_mode(0o600),
        )?;
        if crate::is_root() {
            // sshd refuses to start without its privilege separation directory.
            fs::create_dir_all("/run/sshd")?;
            fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755))?;
        }
        let mut last = None;
        for _ in 0..5 {
            sshd.port = crate::free_port()?;
            sshd.write_config(&opts)?;
            sshd.write_known_hosts("host_key.pub", "known_hosts")?;
            sshd.write_known_hosts("other_host_key.pub", "wrong_known_hosts")?;
            match sshd.spawn_and_wait() {
                Ok(()) => return Ok(sshd),
                Err(e) => {
                    let retry = e.to_string().contains("Address already in use");
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    fn write_config(&self, opts: &SshdOptions) -> io::Result<()> {
        let d = self.dir.display();
        let mut conf = format!(
            "# written by hs-testkit\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {d}/host_key\n\
             PidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             UsePAM no\n\
             UseDNS no\n\
             AllowUsers {user}\n\
             MaxSessions 32\n\
             MaxStartups 32:30:64\n\
             LogLevel VERBOSE\n",
            port = self.port,
            user = self.user,
        );
        if opts.sftp {
            conf.push_str("Subsystem sftp internal-sftp\n");
        }
        fs::write(self.dir.join("sshd_config"), conf)
    }

    fn write_known_hosts(&self, pubfile: &str, out: &str) -> io::Result<()> {
        let key = fs::read_to_string(self.dir.join(pubfile))?;
        let mut parts = key.split_whitespace();
        let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
            return Err(io::Error::other(format!("{pubfile} is not a public key")));
        };
        fs::write(
            self.dir.join(out),
            format!("[127.0.0.1]:{} {kind} {b64}\n", self.port),
        )
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = fs::File::create(self.log_path())?;
        let mut child = Command::new(SSHD_PATH)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so that stop() also ends the per-connection children.
            .process_group(0)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "sshd exited ({status}) before accepting connections:\n{}",
                    self.log_tail()
                )));
            }
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("SSH-") {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("sshd did not answer within 20 s:\n{}", self.log_tail()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user the client logs in as (the current OS user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private directory holding keys, config and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The client's private key (authorized on this server).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// A `known_hosts` file holding this server's host key for `[127.0.0.1]:port`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// A `known_hosts` file that names a different key for `[127.0.0.1]:port`.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        self.dir.join("wrong_known_hosts")
    }

    /// `<scheme>://<user>@127.0.0.1:<port><path>?key=..&known_hosts=..` for a repository at
    /// the absolute `path`.
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!(
            "{scheme}://{}@127.0.0.1:{}{path}?key={}&known_hosts={}",
            self.user,
            self.port,
            self.client_key().display(),
            self.known_hosts().display()
        )
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// The last 40 lines of the server log.
    pub fn log_tail(&self) -> String {
        let s = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Cut every connection and start the server again on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Stop the server now (connections are cut); the directory stays until drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .arg(format!("-{}", c.id()))
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("HS_KEEP_TEST_DIRS").is_some() {
            eprintln!(
                "hs-testkit: keeping {} (HS_KEEP_TEST_DIRS is set)",
                self.dir.display()
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
