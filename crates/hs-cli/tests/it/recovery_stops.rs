//! Regressions for recovery that ended short and silently (issue 13, item 1) and a
//! streamer that held up the primary's fast shutdown (item 2).
//!
//! PostgreSQL reads a `restore_command` exit status of 1..=125 as "not in the
//! archive" and ends recovery there; before the fix `wal fetch` exited 1, 8 or 9 for
//! an unreadable keyring, unreachable storage or a damaged segment, and the restored
//! server promoted with the rest of the WAL never replayed. Now only absence exits
//! below 126, so the server stops instead, and starts once the cause is fixed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{
    archive_current_wal, hs, init_and_backup, lsn, start_restored, wait_durable, wait_streaming,
    wal_fetch, Run, Scratch, Streamer,
};

/// A cluster with one backup of `deployment` and archived WAL after it holding rows
/// 1..=`rows` of table `t` (the last of them only in archived WAL); the streamer is
/// stopped. Returns the scratch, the repository URL and the cluster (stopped).
fn backup_then_archive(deployment: &str, rows: u32) -> (Scratch, String, PgCluster) {
    let s = Scratch::new();
    let mut pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    pg.psql("CREATE TABLE t (n int)").unwrap();
    pg.psql("INSERT INTO t SELECT generate_series(1, 10)")
        .unwrap();
    let (url, conn, _) = init_and_backup(&s, &pg, deployment);
    let streamer = Streamer::start(&s, deployment, &conn, &url, &[]);
    wait_streaming(&pg, deployment, Duration::from_secs(60));
    for from in (11..=rows).step_by(100) {
        pg.psql(&format!(
            "INSERT INTO t SELECT generate_series({from}, {})",
            (from + 99).min(rows)
        ))
        .unwrap();
        pg.psql("SELECT pg_switch_wal()").unwrap();
    }
    archive_current_wal(&pg, deployment);
    let (status, _) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    pg.stop().unwrap();
    (s, url, pg)
}

fn restore(s: &Scratch, deployment: &str, url: &str, dir: &str, extra: &[&str]) -> Run {
    crate::support::restore(s, deployment, "latest", &s.path(dir), url, extra)
}

/// The server did not end recovery: `recovery.signal` is still there and no new
/// timeline was chosen.
fn assert_still_in_recovery(data_dir: &Path) {
    assert!(
        data_dir.join("recovery.signal").exists(),
        "recovery.signal is gone: the server ended recovery"
    );
    assert!(
        !data_dir.join("pg_wal/00000002.history").exists(),
        "the server promoted to timeline 2"
    );
}

#[test]
fn an_unreadable_keyring_stops_recovery_instead_of_promoting_without_the_archived_wal() {
    if !hs_testkit::is_root() {
        eprintln!("skipped: needs root to run the restored server as another OS user");
        return;
    }
    let (s, url, _pg) = backup_then_archive("keyring", 310);
    // The server's user (postgres) can reach the repository, but the keyring is
    // root's, mode 0600: the README's steps as root, before this fix.
    s.share_with_postgres(false);

    // Restoring as root into a directory of root's: the server's user is unknown,
    // nothing can be checked, and restore says so.
    let r = restore(&s, "keyring", &url, "plain", &[]).ok();
    assert_eq!(r["recovery_configured"], true, "{r}");
    let warnings = r["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("--restore-user")),
        "{r}"
    );
    let dir = s.path("plain");
    let started = PgCluster::start_existing(&dir);
    let log = match &started {
        Ok(pg) => panic!(
            "the server started although restore_command cannot read the keyring; rows: {:?}\n{}",
            pg.psql("SELECT count(*) FROM t"),
            pg.log_tail(40)
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        log.contains("exit code 201"),
        "restore_command did not exit 201 (io.*, fatal for PostgreSQL):\n{log}"
    );
    assert_still_in_recovery(&dir);
    drop(started);

    // Fixed (the keyring readable by postgres), the same directory recovers all of it.
    hs_testkit::chown_to_postgres(&s.keyring()).unwrap();
    let pg = start_restored(&dir);
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "310");
}

#[test]
fn restore_with_restore_user_checks_restore_command_as_that_user() {
    if !hs_testkit::is_root() {
        eprintln!("skipped: --restore-user needs root");
        return;
    }
    let (s, url, _pg) = backup_then_archive("ruser", 120);
    s.share_with_postgres(false);

    // root's 0600 keyring in the restore_command: refused, naming the user and cause.
    let r = restore(
        &s,
        "ruser",
        &url,
        "refused",
        &["--restore-user", "postgres"],
    );
    assert_eq!(r.status, 4, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.err_code(), "preflight.restore_command_failed");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("postgres") && msg.contains("exited 201"),
        "{msg}"
    );

    // A keyring copy of postgres's own: accepted, checked as postgres, directory handed over.
    let copy = s.path("pg-keyring");
    std::fs::copy(s.keyring(), &copy).unwrap();
    hs_testkit::chown_to_postgres(&copy).unwrap();
    let r = restore(
        &s,
        "ruser",
        &url,
        "accepted",
        &[
            "--restore-user",
            "postgres",
            "--restore-keyring",
            copy.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(r["restore_command_checked_as"], "postgres", "{r}");
    let dir = s.path("accepted");
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join("PG_VERSION")).unwrap());
    assert_ne!(owner, 0, "the restored files still belong to root");
    let pg = start_restored(&dir);
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "120");
}

#[test]
fn a_damaged_segment_stops_recovery_and_wal_fetch_exits_above_125_for_all_but_absence() {
    let (s, url, _pg) = backup_then_archive("damaged", 410);
    let listing = hs(&s, &["wal", "list", "damaged", "--repo", &url]).ok();
    let last = listing["ranges"][0]["last"].as_str().unwrap().to_owned();
    let seg_file = s
        .repo_dir()
        .join(format!("deployments/damaged/wal/{}/{last}", &last[..8]));
    assert!(seg_file.is_file(), "no object at {}", seg_file.display());

    let kr = s.keyring();
    // Absent: the one answer below 126.
    let (code, err) = wal_fetch(
        &s,
        &["damaged", "0000000100000000000000FF", "out", "--repo", &url],
        &kr,
    );
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("notfound.wal_segment"), "{err}");
    let (code, err) = wal_fetch(
        &s,
        &["damaged", "00000009.history", "out", "--repo", &url],
        &kr,
    );
    assert_eq!(code, 6, "{err}");
    // Served.
    let (code, err) = wal_fetch(&s, &["damaged", &last, "out", "--repo", &url], &kr);
    assert_eq!(code, 0, "{err}");
    // Everything else is fatal for PostgreSQL.
    let missing_repo = format!("file://{}", s.path("no-such-repo").display());
    let (code, err) = wal_fetch(&s, &["damaged", &last, "out", "--repo", &missing_repo], &kr);
    assert_eq!(
        code, 206,
        "a missing repository is not a missing segment: {err}"
    );
    let (code, err) = wal_fetch(
        &s,
        &["damaged", &last, "out", "--repo", &url],
        &s.path("no-keyring"),
    );
    assert!(code > 125, "a missing keyring exited {code}: {err}");
    let (code, err) = wal_fetch(&s, &["damaged", &last], &kr);
    assert_eq!(code, 202, "a command line clap refuses: {err}");
    let (code, err) = wal_fetch(
        &s,
        &["damaged", &last, "/nonexistent-dir/x", "--repo", &url],
        &kr,
    );
    assert!(code > 125, "an unwritable %p exited {code}: {err}");
    let (code, err) = wal_fetch(
        &s,
        &["damaged", "not-a-wal-name", "out", "--repo", &url],
        &kr,
    );
    assert_eq!(code, 202, "{err}");

    let mut bytes = std::fs::read(&seg_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg_file, &bytes).unwrap();
    let (code, err) = wal_fetch(&s, &["damaged", &last, "out", "--repo", &url], &kr);
    assert_eq!(
        code, 209,
        "a damaged segment must be fatal for PostgreSQL: {err}"
    );
    assert!(err.contains("error[verify.auth_tag_mismatch]"), "{err}");

    // A restored server stops at the damaged segment instead of promoting before it.
    s.share_with_postgres(true);
    let r = restore(&s, "damaged", &url, "restored", &[]).ok();
    assert_eq!(r["recovery_configured"], true, "{r}");
    let dir = s.path("restored");
    let deadline = Instant::now() + Duration::from_secs(90);
    let started = PgCluster::start_existing(&dir);
    // With hot standby the server may accept connections before it reaches the
    // damaged segment; it must then stop there, never promote.
    if let Ok(pg) = &started {
        while Instant::now() < deadline && pg.psql("SELECT 1").is_ok() {
            assert_eq!(
                pg.psql("SELECT pg_is_in_recovery()")
                    .unwrap_or_else(|_| "t".into()),
                "t",
                "the server promoted before the damaged segment:\n{}",
                pg.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = pg.log_tail(80);
        assert!(log.contains("exit code 209"), "{log}");
    } else if let Err(e) = &started {
        assert!(e.to_string().contains("exit code 209"), "{e}");
    }
    assert_still_in_recovery(&dir);
}

#[test]
fn restore_verify_wal_reads_the_archived_wal_before_writing_anything() {
    let (s, url, _pg) = backup_then_archive("verifywal", 210);
    let r = restore(&s, "verifywal", &url, "ok", &["--verify-wal", "--preview"]).ok();
    assert!(r.get("plan").is_some(), "{r}");
    let listing = hs(&s, &["wal", "list", "verifywal", "--repo", &url]).ok();
    let last = listing["ranges"][0]["last"].as_str().unwrap().to_owned();
    let seg_file = s
        .repo_dir()
        .join(format!("deployments/verifywal/wal/{}/{last}", &last[..8]));
    let mut bytes = std::fs::read(&seg_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&seg_file, &bytes).unwrap();
    // Listing alone still plans fine; reading finds the damage, before any write.
    let r = restore(&s, "verifywal", &url, "preview", &["--preview"]).ok();
    assert!(r.get("plan").is_some(), "{r}");
    let r = restore(&s, "verifywal", &url, "checked", &["--verify-wal"]);
    assert_eq!(r.status, 9, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.err_code(), "verify.auth_tag_mismatch", "{}", r.stdout);
    assert!(
        r.stdout.contains(&last),
        "the damaged segment is not named: {}",
        r.stdout
    );
    assert!(
        !s.path("checked").exists(),
        "restore wrote its target before failing"
    );
}

#[test]
fn a_running_wal_stream_does_not_hold_up_a_fast_shutdown_and_stores_the_shutdown_checkpoint() {
    let s = Scratch::new();
    let mut pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    pg.psql("CREATE TABLE t (n int)").unwrap();
    let (url, conn, _) = init_and_backup(&s, &pg, "shutdown");
    // The default mode (not --synchronous): flush was reported at segment ends only.
    let streamer = Streamer::start(&s, "shutdown", &conn, &url, &[]);
    wait_streaming(&pg, "shutdown", Duration::from_secs(60));
    pg.psql("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();

    let started = Instant::now();
    pg.stop().expect("fast shutdown while wal stream runs");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "pg_ctl stop -m fast took {took:?} while wal stream ran"
    );
    let control = Command::new(hs_testkit::pg_bin("pg_controldata"))
        .arg(pg.data_dir())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    let checkpoint = control
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .map(str::trim)
        .expect("checkpoint location")
        .to_owned();
    assert!(control.contains("shut down"), "{control}");

    let (status, _) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    // The shutdown checkpoint record is in the repository: fetch the segment that
    // holds it (complete or the zero-padded partial) and find it with pg_waldump.
    let seg = format!(
        "00000001{:08X}{:08X}",
        lsn(&checkpoint) >> 32,
        (lsn(&checkpoint) & 0xFFFF_FFFF) >> 24
    );
    let waldir = s.path("waldump");
    std::fs::create_dir(&waldir).unwrap();
    let (code, err) = wal_fetch(
        &s,
        &[
            "shutdown",
            &seg,
            waldir.join(&seg).to_str().unwrap(),
            "--repo",
            &url,
        ],
        &s.keyring(),
    );
    assert_eq!(code, 0, "{err}");
    let dump = Command::new(hs_testkit::pg_bin("pg_waldump"))
        .arg("-p")
        .arg(&waldir)
        .arg(&seg)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.lines().any(|l| l.contains("CHECKPOINT_SHUTDOWN")
            && l.split("lsn: ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .map(lsn)
                == Some(lsn(&checkpoint))),
        "the shutdown checkpoint at {checkpoint} is not in the stored WAL:\n{}",
        dump.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn wal_stream_retries_a_read_only_repository_instead_of_exiting() {
    if !hs_testkit::is_root() {
        eprintln!("skipped: needs root to mount a file system read-only");
        return;
    }
    let s = Scratch::new();
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = |args: &[&str]| {
        Command::new("mount")
            .args(args)
            .arg(&mnt)
            .status()
            .is_ok_and(|st| st.success())
    };
    if !mount(&["-t", "tmpfs", "-o", "size=256m", "tmpfs"]) {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let url = format!("file://{}/repo", mnt.display());
    hs(&s, &["repo", "init", &url]).ok();
    let pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    let conn = pg.replication_conninfo();
    let mut streamer = Streamer::start(&s, "ro", &conn, &url, &[]);
    wait_streaming(&pg, "ro", Duration::from_secs(60));

    assert!(mount(&["-o", "remount,ro"]), "remount read-only");
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) n")
        .unwrap();
    pg.psql("SELECT pg_switch_wal()").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        streamer.is_running(),
        "wal stream exited on a read-only repository"
    );

    assert!(mount(&["-o", "remount,rw"]), "remount read-write");
    let end = lsn(&pg.psql("SELECT pg_current_wal_lsn()").unwrap());
    pg.psql("SELECT pg_switch_wal()").unwrap();
    wait_durable(&pg, "ro", end, Duration::from_secs(90));
    let log = std::fs::read_to_string(s.path("stream-ro.log")).unwrap_or_default();
    assert!(
        log.contains("io.read_only"),
        "the refusal was not logged:\n{log}"
    );
    let (status, _) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
}
