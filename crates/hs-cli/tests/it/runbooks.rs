//! Runbooks 1, 2, 6 and 7 of docs/runbooks.md as written (issue 19): the ```sh blocks
//! marked `<!-- tested: NAME -->` are read from the file at run time and typed into one
//! `sh` session per operator, as root and as the `postgres` OS user, against throwaway
//! clusters. Only paths, ports, times and the password change (each replacement must
//! find its text in the block, so a doc that drifts fails here); then each runbook's
//! "It worked when" is checked.
//!
//! These tests need root (the runbooks hand directories to postgres and start servers
//! as postgres with runuser); without it they say so and return.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use hs_testkit::{chown_to_postgres, pg_bin, pg_bin_dir, PgCluster};

use crate::support::{archive_current_wal, bin, wait_streaming, Run, Scratch, Streamer};

/// Every block the doc marks as tested; each is run by a test below.
const TESTED: &[&str] = &[
    "runbook-1-check",
    "runbook-1-do",
    "runbook-1-worked",
    "runbook-1-backup",
    "runbook-2-check",
    "runbook-2-do",
    "runbook-2-look",
    "runbook-2-worked",
    "runbook-6-check",
    "runbook-6-do",
    "runbook-7-do",
];

fn runbooks_md() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbooks.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The names of every `<!-- tested: NAME -->` marker in the doc, in order.
fn markers(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix("<!-- tested: "))
        .filter_map(|l| l.strip_suffix(" -->"))
        .map(str::to_owned)
        .collect()
}

/// The body of the ```sh block right after `<!-- tested: NAME -->`.
fn block(doc: &str, name: &str) -> String {
    let marker = format!("<!-- tested: {name} -->");
    let mut lines = doc.lines().skip_while(|l| l.trim() != marker);
    assert!(lines.next().is_some(), "docs/runbooks.md has no {marker}");
    assert_eq!(
        lines.next().map(str::trim),
        Some("```sh"),
        "{marker} must be followed by a ```sh block"
    );
    let body: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    assert!(!body.is_empty(), "{marker}: empty block");
    body.join("\n")
}

/// `text` with each `(from, to)` replaced; every `from` must occur.
fn replaced(name: &str, text: &str, subs: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in subs {
        assert!(
            out.contains(from),
            "block {name} no longer contains {from:?}; update docs/runbooks.md and this test together:\n{text}"
        );
        out = out.replace(from, to);
    }
    out
}

#[test]
fn every_marked_block_is_run_by_a_test() {
    let doc = runbooks_md();
    assert_eq!(markers(&doc), TESTED);
    for name in TESTED {
        block(&doc, name);
    }
}

/// Who types the commands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Operator {
    Root,
    Postgres,
}

/// One operator's shell: `sh` reading commands from a pipe with `set -ex`, stderr merged
/// into stdout, in a clean environment. A failing command ends the shell, which fails
/// the test with the transcript.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    transcript: String,
}

impl Session {
    fn start(who: Operator, cwd: &Path, env: &[(String, String)]) -> Session {
        let mut cmd = match who {
            Operator::Root => Command::new("env"),
            Operator::Postgres => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", "env"]);
                c
            }
        };
        cmd.arg("-i")
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg("sh")
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start sh");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut s = Session {
            stdin: child.stdin.take(),
            child,
            lines,
            transcript: String::new(),
        };
        s.type_in("exec 2>&1\nset -ex\n");
        s
    }

    fn type_in(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Types `text` and waits (5 min) until it ran; returns what it printed.
    fn run(&mut self, name: &str, text: &str) -> String {
        const DONE: &str = "@@runbook-block-done@@";
        self.transcript.push_str(&format!("### {name}\n"));
        self.type_in(&format!("{text}\necho {DONE}\n"));
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == DONE => return out,
                Ok(l) => {
                    self.transcript.push_str(&l);
                    self.transcript.push('\n');
                    out.push_str(&l);
                    out.push('\n');
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "block {name} failed (the shell stopped at a failing command):\n{}",
                    self.transcript
                ),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("block {name} did not finish in 5 min:\n{}", self.transcript)
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Shown by the test runner when the test fails, and with --no-capture.
        eprintln!("--- session transcript ---\n{}", self.transcript);
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server a runbook block started with `pg_ctl`; stopped on drop.
struct Started(PathBuf);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = hs_testkit::postgres_user_command(pg_bin("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(&self.0)
            .output();
    }
}

/// A DBA's host: ./pg_hardstorage.yaml written by `init` (deployment `main`), root's
/// keyring in root's home, a copy in postgres's home (the `--restore-keyring` of the
/// runbooks), and `pg_hardstorage` on the PATH.
struct Host {
    s: Scratch,
    root_home: PathBuf,
    pg_home: PathBuf,
}

impl Host {
    /// `init` against `conn` as root (its first backup included), then the keyring copy.
    fn init(conn: &str) -> Host {
        use std::os::unix::fs::PermissionsExt;
        let s = Scratch::new();
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = Host {
            root_home: s.path("root-home"),
            pg_home: s.path("pg-home"),
            s,
        };
        std::fs::create_dir_all(h.s.path("bin")).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_pg_hardstorage"),
            h.s.path("bin/pg_hardstorage"),
        )
        .unwrap();
        let url = h.s.repo_url();
        h.hs(&[
            "init",
            "--pg-connection",
            conn,
            "--repo",
            &url,
            "--deployment",
            "main",
            "--yes",
            "-o",
            "json",
        ])
        .ok();
        let copy = h.pg_keyring();
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(h.root_home.join(".config/pg_hardstorage/keyring"), &copy).unwrap();
        chown_to_postgres(&h.pg_home).unwrap();
        // The config holds the password (0600); postgres reads it when it is the operator.
        chown_to_postgres(&h.s.path("pg_hardstorage.yaml")).unwrap();
        h
    }

    /// The keyring the restored server's restore_command reads (postgres's own).
    fn pg_keyring(&self) -> PathBuf {
        self.pg_home.join(".config/pg_hardstorage/keyring")
    }

    /// `pg_hardstorage ARGS` as root in the host's directory.
    fn hs(&self, args: &[&str]) -> Run {
        let mut cmd = bin();
        cmd.args(args)
            .current_dir(self.s.dir.path())
            .env("HOME", &self.root_home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("PG_HARDSTORAGE_CONFIG")
            .env_remove("PG_HARDSTORAGE_KEYRING");
        Run::of(&mut cmd)
    }

    /// `wal stream main` from the config, as the supervised service would run it.
    fn stream(&self) -> Streamer {
        let log = std::fs::File::create(self.s.path("stream.log")).unwrap();
        let child = bin()
            .args(["wal", "stream", "main"])
            .current_dir(self.s.dir.path())
            .env("HOME", &self.root_home)
            .env_remove("PG_HARDSTORAGE_CONFIG")
            .env_remove("PG_HARDSTORAGE_KEYRING")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wal stream");
        Streamer { child: Some(child) }
    }

    /// A shell for `who`, with libpq's defaults pointing at `pg`'s socket directory and
    /// port (as /var/run/postgresql and 5432 would on a Debian host).
    fn session(&self, who: Operator, pg: &PgCluster) -> Session {
        // Whatever root wrote into the repository, postgres may need to read or lease.
        chown_to_postgres(&self.s.repo_dir()).unwrap();
        let home = match who {
            Operator::Root => &self.root_home,
            Operator::Postgres => &self.pg_home,
        };
        let path = format!(
            "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.s.path("bin").display(),
            pg_bin_dir().display()
        );
        let env = [
            ("PATH", path),
            ("HOME", home.display().to_string()),
            ("PGHOST", pg.socket_dir().display().to_string()),
            ("PGPORT", pg.port().to_string()),
            ("LANG", "C.UTF-8".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        Session::start(who, self.s.dir.path(), &env)
    }

    /// A directory `who` may create a restore target in (as /srv/pg would be), with a
    /// `15/` inside.
    fn srv(&self, who: Operator) -> PathBuf {
        let d = self.s.path(&format!("srv-{who:?}").to_lowercase());
        std::fs::create_dir_all(d.join("15")).unwrap();
        if who == Operator::Postgres {
            chown_to_postgres(&d).unwrap();
        }
        d
    }

    /// The substitutions every runbook needs: server binaries and postgres's keyring.
    fn common_subs(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "/var/lib/postgresql/.config/pg_hardstorage/keyring",
                self.pg_keyring().display().to_string(),
            ),
            (
                "/usr/lib/postgresql/15/bin",
                pg_bin_dir().display().to_string(),
            ),
        ]
    }
}

/// `psql -XAtc SQL` as the postgres role over the socket in `sock` on `port`.
fn psql_at(sock: &Path, port: u16, sql: &str) -> Option<String> {
    let out = Command::new(pg_bin("psql"))
        .args(["-XAt", "-U", "postgres", "-h"])
        .arg(sock)
        .args(["-p", &port.to_string(), "-c", sql])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Polls `sql` until it returns `want` (120 s).
fn wait_for(sock: &Path, port: u16, sql: &str, want: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while psql_at(sock, port, sql).as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{sql} never returned {want}; server log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether the runbooks can be followed here (root, to act as postgres).
fn can_run(test: &str) -> bool {
    if hs_testkit::is_root() {
        return true;
    }
    eprintln!("{test}: skipped, the runbooks are run as root and as postgres (runuser needs root)");
    false
}

#[test]
fn runbook_1_primary_lost_restores_as_written_as_root_and_as_postgres() {
    if !can_run("runbook 1") {
        return;
    }
    let doc = runbooks_md();
    let mut pg = crate::support::cluster_with(
        "CREATE TABLE orders(id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, 'old' FROM generate_series(1, 1000) g;",
    );
    // The restored server takes over the lost primary's port from its configuration.
    pg.psql(&format!("ALTER SYSTEM SET port = {}", pg.port()))
        .unwrap();
    let host = Host::init(&pg.replication_conninfo());
    let streamer = host.stream();
    wait_streaming(&pg, "main", Duration::from_secs(60));
    pg.psql("INSERT INTO orders SELECT g, 'newest' FROM generate_series(1001, 1010) g")
        .unwrap();
    archive_current_wal(&pg, "main");
    // The last rows only in the segment in progress: "including the last .partial".
    pg.psql("INSERT INTO orders SELECT g, 'partial' FROM generate_series(1011, 1015) g")
        .unwrap();
    wait_received(&pg, Duration::from_secs(60));
    let (stopped, _) = streamer.stop(); // SIGTERM: it stores the .partial, then exits
    assert!(stopped.success());
    pg.stop().unwrap(); // the primary is lost
    let (sock, port) = (pg.socket_dir().to_path_buf(), pg.port());

    for who in [Operator::Root, Operator::Postgres] {
        let target = host.srv(who).join("15/main");
        let mut subs = host.common_subs();
        subs.push(("/srv/pg/15/main", target.display().to_string()));
        let mut sh = host.session(who, &pg);
        let check = sh.run("runbook-1-check", &block(&doc, "runbook-1-check"));
        assert!(check.contains("last backup:"), "{check}");
        let name = "runbook-1-do";
        sh.run(name, &replaced(name, &block(&doc, name), &subs));
        let _server = Started(target.clone());
        let log = target.join("startup.log");
        wait_for(&sock, port, "select pg_is_in_recovery()", "f", &log);
        let worked = sh.run("runbook-1-worked", &block(&doc, "runbook-1-worked"));
        assert!(worked.lines().any(|l| l == "f"), "{who:?}: {worked}");
        assert_eq!(
            psql_at(
                &sock,
                port,
                "select count(*) from orders where note = 'newest'"
            )
            .as_deref(),
            Some("10"),
            "{who:?}: the newest rows are there"
        );
        assert_eq!(
            psql_at(
                &sock,
                port,
                "select count(*) from orders where note = 'partial'"
            )
            .as_deref(),
            Some("5"),
            "{who:?}: the rows only the .partial held are there"
        );
        let backup = sh.run("runbook-1-backup", &block(&doc, "runbook-1-backup"));
        assert!(backup.contains("Backup "), "{who:?}: {backup}");
    }
}

/// Waits until the streamer reported the server's current WAL position received
/// (`write_lsn`; without --synchronous it reports flushes by whole segments only).
fn wait_received(pg: &PgCluster, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let sql = "SELECT count(*) FROM pg_stat_replication WHERE write_lsn >= pg_current_wal_lsn()";
    while pg.psql(sql).unwrap() != "1" {
        assert!(
            Instant::now() < deadline,
            "the streamer did not report the current WAL received: {}",
            pg.psql("SELECT write_lsn, pg_current_wal_lsn() FROM pg_stat_replication")
                .unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The UTC second now, as the runbook writes a target time (`2026-11-26 13:58:00`).
fn utc_now(pg: &PgCluster) -> String {
    pg.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
        .unwrap()
}

#[test]
fn runbook_2_pitr_before_a_bad_deploy_works_as_written_as_root_and_as_postgres() {
    if !can_run("runbook 2") {
        return;
    }
    let doc = runbooks_md();
    let pg = crate::support::cluster_with(
        "CREATE TABLE orders(id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, 'x' FROM generate_series(1, 1000) g;",
    );
    let host = Host::init(&pg.replication_conninfo());
    let streamer = host.stream();
    wait_streaming(&pg, "main", Duration::from_secs(60));
    pg.psql("INSERT INTO orders SELECT g, 'y' FROM generate_series(1001, 1100) g")
        .unwrap();
    pg.psql("SELECT pg_create_restore_point('pre_release_42')")
        .unwrap();
    // The target: a whole second after the last good commit, a second before the bad one.
    std::thread::sleep(Duration::from_millis(1100));
    let target_time = utc_now(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    pg.psql("DELETE FROM orders WHERE id > 10").unwrap(); // the bad deploy
    archive_current_wal(&pg, "main");
    streamer.stop();

    for who in [Operator::Root, Operator::Postgres] {
        let target = host.srv(who).join("pitr");
        let port = hs_testkit::free_port().unwrap();
        let mut subs = host.common_subs();
        subs.extend([
            ("/srv/pg/pitr", target.display().to_string()),
            ("2026-11-26 13:58:00", target_time.clone()),
            ("5499", port.to_string()),
        ]);
        // Each block with the replacements it must contain.
        let sub = |name: &str, froms: &[&str]| {
            let mine: Vec<_> = subs
                .iter()
                .filter(|(from, _)| froms.contains(from))
                .cloned()
                .collect();
            assert_eq!(mine.len(), froms.len());
            replaced(name, &block(&doc, name), &mine)
        };
        let (dir, time, port_text) = ("/srv/pg/pitr", "2026-11-26 13:58:00", "5499");
        let mut sh = host.session(who, &pg);
        let pre = sh.run("runbook-2-check", &sub("runbook-2-check", &[dir, time]));
        assert!(
            !target.exists(),
            "{who:?}: the preview wrote {target:?}:\n{pre}"
        );
        let all: Vec<&str> = subs.iter().map(|(from, _)| *from).collect();
        sh.run("runbook-2-do", &sub("runbook-2-do", &all));
        let _server = Started(target.clone());
        let log = target.join("startup.log");
        let sock = pg.socket_dir();
        wait_for(
            sock,
            port,
            "select pg_get_wal_replay_pause_state()",
            "paused",
            &log,
        );
        let look = sh.run("runbook-2-look", &sub("runbook-2-look", &[port_text]));
        assert!(
            look.contains("1100"),
            "{who:?}: the state before the deploy\n{look}"
        );
        wait_for(sock, port, "select pg_is_in_recovery()", "f", &log);
        let worked = sh.run("runbook-2-worked", &sub("runbook-2-worked", &[dir]));
        assert!(
            worked.contains("recovery stopping before commit of transaction"),
            "{who:?}: {worked}"
        );
        assert_eq!(
            psql_at(sock, port, "select count(*) from orders").as_deref(),
            Some("1100")
        );
    }
}

/// The multi-host connection string runbook 6 recommends, as the doc writes it.
fn doc_conninfo(doc: &str) -> String {
    doc.split('`')
        .find(|p| p.starts_with("postgresql://") && p.contains("target_session_attrs="))
        .expect("runbook 6 shows a multi-host postgresql:// string with target_session_attrs")
        .to_owned()
}

/// `wal list main -o json`: the last segment of `timeline`, if any.
fn last_on_timeline(host: &Host, timeline: u64) -> (Option<String>, serde_json::Value) {
    let list = host.hs(&["wal", "list", "main", "-o", "json"]).ok();
    let last = list["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["timeline"] == timeline)
        .filter_map(|r| r["last"].as_str().map(str::to_owned))
        .next_back();
    (last, list)
}

#[test]
fn runbook_6_failover_follows_the_new_primary_as_written() {
    if !can_run("runbook 6") {
        return;
    }
    let doc = runbooks_md();
    let mut primary = crate::support::cluster_with(
        "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let standby = primary.standby().expect("standby");
    let pw = primary.replication_password().to_owned();
    let conn = replaced(
        "runbook 6's connection string",
        &doc_conninfo(&doc),
        &[
            ("hs_repl@", format!("hs_repl:{pw}@")),
            ("db1:5432", format!("127.0.0.1:{}", primary.port())),
            ("db2:5432", format!("127.0.0.1:{}", standby.port())),
        ],
    );
    let host = Host::init(&conn);
    let _streamer = host.stream();
    wait_streaming(&primary, "main", Duration::from_secs(60));
    primary.psql("INSERT INTO orders VALUES (1001)").unwrap();
    archive_current_wal(&primary, "main");

    // The HA manager fails over: the primary goes away, the standby is promoted. The
    // streamer reconnects through the same string, makes its slot there and follows.
    primary.stop().unwrap();
    assert_eq!(standby.psql("SELECT pg_promote()").unwrap(), "t");
    wait_streaming(&standby, "main", Duration::from_secs(120));
    standby.psql("INSERT INTO orders VALUES (1002)").unwrap();
    archive_current_wal(&standby, "main");

    for who in [Operator::Root, Operator::Postgres] {
        let mut sh = host.session(who, &standby);
        let check = sh.run("runbook-6-check", &block(&doc, "runbook-6-check"));
        assert!(
            check.contains("history: 00000002.history"),
            "{who:?}: {check}"
        );
        assert!(!check.contains('✗'), "{who:?}: {check}");
        let backup = sh.run("runbook-6-do", &block(&doc, "runbook-6-do"));
        assert!(backup.contains("Backup "), "{who:?}: {backup}");
    }

    // It worked when: segments on the new timeline are being added, and doctor shows
    // no issue, having reached the promoted server as the primary.
    let (before, list) = last_on_timeline(&host, 2);
    assert!(before.is_some(), "no segment on timeline 2: {list}");
    standby.psql("INSERT INTO orders VALUES (1003)").unwrap();
    archive_current_wal(&standby, "main");
    let (after, list) = last_on_timeline(&host, 2);
    assert!(after > before, "timeline 2 did not grow: {list}");
    let d = host.hs(&["doctor", "main", "-o", "json"]).ok();
    let dep = &d["deployments"][0];
    assert_eq!(dep["server"]["role"], "primary", "{d}");
    assert_eq!(dep["server"]["port"], standby.port(), "{d}");
    let issues: Vec<_> = dep["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "issue")
        .collect();
    assert!(issues.is_empty(), "doctor after the failover: {issues:?}");
}

/// A tmpfs at `dir` with `opts`; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn runbook_7_disk_fills_during_a_restore_then_delta_finishes_it_as_written() {
    if !can_run("runbook 7") {
        return;
    }
    let doc = runbooks_md();
    let pg = crate::support::cluster_with(
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let host = Host::init(&pg.replication_conninfo());
    // A volume with room for the bytes (the space check passes) but for only 300 files:
    // the restore runs out of space part way, as when something else fills the disk.
    let Some(vol) = Tmpfs::mount(&host.s.path("vol"), "size=1g,nr_inodes=300") else {
        eprintln!("runbook 7: skipped, cannot mount a tmpfs");
        return;
    };
    let target = vol.0.join("15/main");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    chown_to_postgres(&vol.0).unwrap();
    let keyring = host.pg_keyring();
    let first = host.hs(&[
        "restore",
        "main",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--to-latest",
        "--restore-user",
        "postgres",
        "--restore-keyring",
        keyring.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let code = first.err_code();
    assert!(code.starts_with("io."), "{code}: {}", first.stdout);
    assert!(
        first.stdout.contains("No space left on device"),
        "{}",
        first.stdout
    );
    assert!(!target.join("global/pg_control").exists());

    // Free space, then the runbook's command.
    vol.remount("nr_inodes=100000");
    let mut subs = host.common_subs();
    subs.push(("/srv/pg/15/main", target.display().to_string()));
    subs.retain(|(from, _)| *from != "/usr/lib/postgresql/15/bin");
    let mut sh = host.session(Operator::Root, &pg);
    let out = sh.run(
        "runbook-7-do",
        &replaced("runbook-7-do", &block(&doc, "runbook-7-do"), &subs),
    );
    assert!(out.contains("pg_verifybackup"), "{out}");
    drop(sh);
    let restored = crate::support::start_restored(&target);
    assert_eq!(
        restored.psql("select count(*) from orders").unwrap(),
        "20000"
    );
}
