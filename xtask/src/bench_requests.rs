//! `cargo xtask bench requests [--backups N] [--at A,B,...] [--per-switch K] [--bin PATH]
//! [--keep]`: storage requests and bytes read per command as a repository's history grows
//! (issue 15: opening a repository does not grow with history).
//!
//! A tiny cluster (`initdb --wal-segsize=1`, one small table) streams its WAL with
//! `wal stream` into an S3 repository on moto (127.0.0.1) while N backups (default 400) are
//! taken one after the other, one row inserted before each (so that every backup has
//! commits after it) and a WAL switch after every K backups (default 4). After backup A, B,
//! ... (default 10, 100 and N) the stream is stopped (once the server's last switch is
//! archived) and these commands run one at a time, each counted on its own:
//!
//! - `restore --preview` of `latest` (to the end of the WAL), and of `latest --to <time>`
//!   where the time is just after the backup in the middle of the history so far;
//! - `wal fetch` of the oldest archived segment, of the newest completed one, and of the
//!   one in progress (served from its `.partial`), when there is one;
//! - `list`;
//! - `backup` (which adds one backup to the history).
//!
//! Counting is done twice, independently:
//!
//! - moto's request log (one line per HTTP request it served): GET of an object, LIST
//!   (one per page of a ListObjectsV2), PUT (multipart parts included), HEAD, DELETE and
//!   POST (multipart start/complete, batch delete); retries count as requests;
//! - the client's own trace (`HS_STORAGE_TRACE`, `hs_repo`'s backend wrapper): the bytes its
//!   reads returned and the entries its listings returned.
//!
//! The table has one row per command and history size. `--keep` keeps the scratch
//! directory, whose `logs/` holds each command's trace (one line per storage call: op,
//! object, bytes) and output.

use crate::bench::{with_scratch, Hs};
use crate::util::{self, sh, show};
use anyhow::{bail, Context, Result};
use hs_testkit::{PgCluster, PgOptions, StorageServer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The replication slot `wal stream bench` creates.
const SLOT: &str = "pg_hardstorage_bench";

pub fn run(args: &[String]) -> Result<()> {
    let mut backups: u32 = 400;
    let mut at: Option<Vec<u32>> = None;
    let mut per_switch: u32 = 4;
    let mut bin: Option<PathBuf> = None;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backups" => backups = util::flag_number(&mut it, "--backups")?,
            "--per-switch" => per_switch = util::flag_number(&mut it, "--per-switch")?,
            "--at" => {
                let list = it.next().context("--at needs a list such as 10,100")?;
                at = Some(
                    list.split(',')
                        .map(|n| n.trim().parse::<u32>())
                        .collect::<std::result::Result<_, _>>()
                        .context("--at needs numbers separated by commas")?,
                );
            }
            "--bin" => bin = Some(PathBuf::from(it.next().context("--bin needs a path")?)),
            "--keep" => keep = true,
            other => bail!("cargo xtask bench requests: unknown argument {other:?}"),
        }
    }
    if backups == 0 || per_switch == 0 {
        bail!("--backups and --per-switch must be at least 1");
    }
    let mut at = at.unwrap_or_else(|| vec![10, 100, backups]);
    at.retain(|&n| n >= 1 && n <= backups);
    at.sort_unstable();
    at.dedup();
    util::ensure_postgres()?;
    let bin = match bin {
        Some(b) if b.is_file() => b,
        Some(b) => bail!("--bin {}: no such file", b.display()),
        None => util::build_release_binary()?,
    };
    with_scratch("xtask bench requests", keep, |work| {
        run_in(work, &bin, backups, &at, per_switch)
    })
}

/// What one measured command did, from moto's log and the client's trace.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
struct Counts {
    get: u64,
    list: u64,
    put: u64,
    head: u64,
    delete: u64,
    post: u64,
    /// Bytes the client's reads returned (trace).
    bytes_read: u64,
    /// Entries the client's listings returned (trace).
    listed: u64,
}

impl Counts {
    fn requests(&self) -> u64 {
        self.get + self.list + self.put + self.head + self.delete + self.post
    }
}

/// Adds moto log lines (`... "GET /bucket/key?q HTTP/1.1" 200 -`) to `c`: a GET of the
/// bucket itself (no key) is a listing page.
fn count_moto_lines(text: &str, c: &mut Counts) {
    for line in text.lines() {
        let Some(req) = line.split('"').nth(1) else {
            continue;
        };
        let mut parts = req.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = target.split('?').next().unwrap_or("");
        if path.starts_with("/moto-api") {
            continue;
        }
        let has_key = path.trim_start_matches('/').contains('/')
            && !path.trim_start_matches('/').ends_with('/');
        match method {
            "GET" if !has_key => c.list += 1,
            "GET" => c.get += 1,
            "PUT" => c.put += 1,
            "HEAD" => c.head += 1,
            "DELETE" => c.delete += 1,
            "POST" => c.post += 1,
            _ => {}
        }
    }
}

/// Adds a trace file's lines (`op \t name \t bytes \t outcome`) to `c`.
fn count_trace(text: &str, c: &mut Counts) {
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [op, _, n, _] = f[..] else { continue };
        let n: u64 = n.parse().unwrap_or(0);
        match op {
            "get" | "get_range" => c.bytes_read += n,
            "list" => c.listed += n,
            _ => {}
        }
    }
}

/// The measured run's state.
struct Run<'a> {
    hs: Hs,
    env: Vec<(String, String)>,
    moto_log: PathBuf,
    logs: PathBuf,
    pg: &'a PgCluster,
    conninfo: String,
    /// (history size, command, counts)
    rows: Vec<(u32, String, Counts)>,
}

impl Run<'_> {
    /// `pg_hardstorage <args> --keyring ...` with the bucket's credentials.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.hs.cmd(args);
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// `backup bench --pg-connection ... --repo ...`.
    fn backup_args(&self) -> [&str; 6] {
        [
            "backup",
            "bench",
            "--pg-connection",
            &self.conninfo,
            "--repo",
            &self.hs.url,
        ]
    }

    /// Runs `cmd` quietly (output to `<logs>/<name>.log`); error with the log's tail if
    /// it fails.
    fn quiet(&self, name: &str, cmd: &mut Command) -> Result<String> {
        let log = self.logs.join(format!("{name}.log"));
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start {}", show(cmd)))?;
        std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                show(cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one measured command with tracing on; records its counts.
    fn measure(&mut self, n: u32, what: &str, args: &[&str]) -> Result<()> {
        let slug: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let stem = format!("{n:04}-{}", slug.trim_matches('-'));
        let trace = self.logs.join(format!("{stem}.trace"));
        let before = std::fs::metadata(&self.moto_log)?.len();
        let mut cmd = self.cmd(args);
        cmd.env("HS_STORAGE_TRACE", &trace);
        eprintln!("$ {}", show(&cmd));
        let t = Instant::now();
        self.quiet(&stem, &mut cmd)?;
        let wall = t.elapsed();
        // moto logs a request after answering it: let the last line land.
        std::thread::sleep(Duration::from_millis(300));
        let log = std::fs::read(&self.moto_log)?;
        let mut c = Counts::default();
        count_moto_lines(&String::from_utf8_lossy(&log[before as usize..]), &mut c);
        count_trace(&std::fs::read_to_string(&trace).unwrap_or_default(), &mut c);
        eprintln!(
            "    {n} backups, {what}: {} requests (GET {}, LIST {}, PUT {}, HEAD {}), {} read, \
             {:.2}s",
            c.requests(),
            c.get,
            c.list,
            c.put,
            c.head,
            crate::bench::human(c.bytes_read),
            wall.as_secs_f64()
        );
        self.rows.push((n, what.to_string(), c));
        Ok(())
    }

    /// Starts `wal stream` and waits until the server shows it streaming.
    fn start_stream(&self) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join("wal-stream.log"))?;
        let mut cmd = self.cmd(&[
            "wal",
            "stream",
            "bench",
            "--pg-connection",
            &self.conninfo,
            "--repo",
            &self.hs.url,
        ]);
        eprintln!("$ {} &", show(&cmd));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start wal stream")?;
        let t = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                bail!("wal stream exited ({st}); see logs/wal-stream.log");
            }
            if self
                .pg
                .psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")?
                != "0"
            {
                return Ok(child);
            }
            if t.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("wal stream did not start streaming within 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Switches WAL, waits until the stream has the switch, then stops the stream.
    fn stop_stream(&self, mut child: Child) -> Result<()> {
        self.pg.psql("SELECT pg_switch_wal()")?;
        let end = self.pg.psql("SELECT pg_current_wal_lsn()")?;
        let t = Instant::now();
        loop {
            let caught_up = self.pg.psql(&format!(
                "SELECT coalesce(bool_and(restart_lsn >= '{end}'::pg_lsn), false) \
                 FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
            ))?;
            if caught_up == "t" {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("wal stream did not reach {end} within 2 minutes");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Let the streamer store what it acknowledged, then stop it.
        std::thread::sleep(Duration::from_secs(2));
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let t = Instant::now();
        while child.try_wait()?.is_none() {
            if t.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.wait();
        Ok(())
    }

    /// The commands measured at `n` backups; `mid` is a time just after the middle
    /// backup of the history so far.
    fn measure_all(&mut self, n: u32, mid: &str) -> Result<()> {
        eprintln!("\n==> {n} backups: measuring");
        let url = self.hs.url.clone();
        let target = self.logs.join("restore-target").display().to_string();
        let fetched = self.logs.join("fetched-segment").display().to_string();
        let (oldest, newest, partial) = self.wal_names()?;
        self.measure(
            n,
            "restore --preview latest",
            &[
                "restore",
                "bench",
                "latest",
                "--target",
                &target,
                "--preview",
                "--repo",
                &url,
            ],
        )?;
        self.measure(
            n,
            "restore --preview latest --to <middle>",
            &[
                "restore",
                "bench",
                "latest",
                "--target",
                &target,
                "--preview",
                "--to",
                mid,
                "--repo",
                &url,
            ],
        )?;
        for (what, seg) in [
            ("wal fetch (oldest segment)", Some(oldest)),
            ("wal fetch (newest segment)", Some(newest)),
            ("wal fetch (in progress, .partial)", partial),
        ] {
            let Some(seg) = seg else { continue };
            self.measure(
                n,
                what,
                &["wal", "fetch", "bench", &seg, &fetched, "--repo", &url],
            )?;
            let _ = std::fs::remove_file(&fetched);
        }
        self.measure(n, "list", &["list", "bench", "--repo", &url])?;
        let args = self.backup_args().map(str::to_owned);
        let args = args.each_ref().map(String::as_str);
        self.measure(n, "backup", &args)?;
        Ok(())
    }

    /// The oldest and newest completed segments and the in-progress one (from its
    /// partial), from `wal list`.
    fn wal_names(&self) -> Result<(String, String, Option<String>)> {
        let text = self.quiet(
            "wal-list",
            &mut self.cmd(&["wal", "list", "bench", "--repo", &self.hs.url]),
        )?;
        let (mut oldest, mut newest, mut partial) = (None, None, None);
        for line in text.lines() {
            // "timeline 1: <first> .. <last>  <n> segments, <size> stored"
            if let Some(rest) = line.strip_prefix("timeline ") {
                let words: Vec<&str> = rest.split_whitespace().collect();
                if let [_, first, "..", last, ..] = words[..] {
                    oldest.get_or_insert_with(|| first.to_string());
                    newest = Some(last.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("partial: ") {
                let name = rest.split_whitespace().next().unwrap_or("");
                partial = Some(name.trim_end_matches(".partial").to_string());
            }
        }
        match (oldest, newest) {
            (Some(o), Some(n)) => Ok((o, n, partial)),
            _ => bail!("wal list shows no archived segment:\n{text}"),
        }
    }
}

fn run_in(work: &Path, bin: &Path, backups: u32, at: &[u32], per_switch: u32) -> Result<()> {
    let pg = PgCluster::start(PgOptions {
        initdb_args: vec!["--wal-segsize=1".into()],
        extra_conf: vec!["fsync = off".into(), "synchronous_commit = off".into()],
        ..PgOptions::default()
    })?;
    pg.psql("CREATE TABLE hist (i int, at timestamptz DEFAULT now())")?;
    let moto = StorageServer::moto().context("start moto (pip install 'moto[server]')")?;
    let bucket = moto.bucket("bench")?;
    let mut hs = Hs::new(bin, work);
    hs.url = bucket.url.clone();
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut run = Run {
        hs,
        env: bucket.env.clone(),
        moto_log: moto.log_path(),
        logs,
        pg: &pg,
        conninfo: pg.replication_conninfo(),
        rows: Vec::new(),
    };
    sh(run
        .cmd(&["repo", "init", &run.hs.url])
        .stdout(Stdio::null()))?;
    let mut stream = Some(run.start_stream()?);
    // Wall-clock time (UTC, RFC 3339) just after each backup.
    let mut after: Vec<String> = Vec::new();
    let t0 = Instant::now();
    for i in 1..=backups {
        pg.psql(&format!("INSERT INTO hist (i) VALUES ({i})"))?;
        run.quiet("backup", &mut run.cmd(&run.backup_args()))?;
        // Manifest times are whole seconds: the next whole second is surely after its end.
        after.push(pg.psql(
            "SELECT to_char((now() + interval '1 second') AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        )?);
        if i % per_switch == 0 {
            pg.psql("SELECT pg_switch_wal()")?;
        }
        if i % 25 == 0 {
            eprintln!("{i}/{backups} backups, {:.0}s", t0.elapsed().as_secs_f64());
        }
        if at.contains(&i) {
            // A commit after every time target (they are at most a second in the future).
            std::thread::sleep(Duration::from_millis(1100));
            pg.psql(&format!("INSERT INTO hist (i) VALUES ({i})"))?;
            if let Some(child) = stream.take() {
                run.stop_stream(child)?;
            }
            let mid = after[(i as usize - 1) / 2].clone();
            run.measure_all(i, &mid)?;
            if i < backups {
                stream = Some(run.start_stream()?);
            }
        }
    }
    if let Some(child) = stream.take() {
        run.stop_stream(child)?;
    }
    report(&run.rows, backups, per_switch);
    Ok(())
}

/// Prints the markdown tables: one row per command and history size, then requests and
/// bytes read per command across history sizes.
fn report(rows: &[(u32, String, Counts)], backups: u32, per_switch: u32) {
    println!();
    println!(
        "Storage requests per command (moto's request log) and bytes read (client trace), \
         {backups} backups of a tiny cluster (WAL segment 1 MiB, a switch every {per_switch} \
         backups), S3 on moto."
    );
    println!();
    println!(
        "| backups | command | GET | LIST pages | PUT | HEAD | DELETE | POST | requests | bytes \
         read | entries listed |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, what, c) in rows {
        println!(
            "| {n} | {what} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.get,
            c.list,
            c.put,
            c.head,
            c.delete,
            c.post,
            c.requests(),
            c.bytes_read,
            c.listed
        );
    }
    let mut sizes: Vec<u32> = rows.iter().map(|r| r.0).collect();
    sizes.dedup();
    let mut commands: Vec<&str> = Vec::new();
    for (_, what, _) in rows {
        if !commands.contains(&what.as_str()) {
            commands.push(what);
        }
    }
    println!();
    let head: Vec<String> = sizes
        .iter()
        .map(|n| format!("{n} backups: requests / bytes read"))
        .collect();
    println!("| command | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(sizes.len()));
    for what in commands {
        let cells: Vec<String> = sizes
            .iter()
            .map(|n| {
                rows.iter()
                    .find(|r| r.0 == *n && r.1 == what)
                    .map_or("-".to_string(), |(_, _, c)| {
                        format!("{} / {}", c.requests(), crate::bench::human(c.bytes_read))
                    })
            })
            .collect();
        println!("| {what} | {} |", cells.join(" | "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_lines_are_classified() {
        let log = concat!(
            "127.0.0.1 - - [05/Dec/2026 17:29:17] \"GET /bench/repo/config HTTP/1.1\" 200 -\n",
            "127.0.0.1 - - [05/Dec/2026 17:29:17] \"GET /bench?list-type=2&prefix=repo%2Fkeys%2F HTTP/1.1\" 200 -\n",
            "127.0.0.1 - - [05/Dec/2026 17:29:17] \"HEAD /bench/repo/data/ab/x HTTP/1.1\" 200 -\n",
            "127.0.0.1 - - [05/Dec/2026 17:29:17] \"PUT /bench/repo/locks/x HTTP/1.1\" 200 -\n",
            "127.0.0.1 - - [05/Dec/2026 17:29:17] \"DELETE /bench/repo/locks/x HTTP/1.1\" 204 -\n",
            "127.0.0.1 - - [05/Dec/2026 17:29:17] \"POST /bench/repo/data/ab/x?uploads HTTP/1.1\" 200 -\n",
            "127.0.0.1 - - [05/Dec/2026 17:29:17] \"GET /moto-api/ HTTP/1.1\" 200 -\n",
            "WARNING: This is a development server.\n",
        );
        let mut c = Counts::default();
        count_moto_lines(log, &mut c);
        assert_eq!(
            (c.get, c.list, c.head, c.put, c.delete, c.post),
            (1, 1, 1, 1, 1, 1)
        );
        count_trace(
            "get\ta\t10\tok\nget_range\tb\t5\tok\nlist\tp/\t7\tok\n",
            &mut c,
        );
        assert_eq!((c.bytes_read, c.listed), (15, 7));
    }
}
