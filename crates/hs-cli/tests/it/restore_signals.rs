//! SIGTERM / SIGINT during `restore` (issue 13 item 7): exit 5 with `aborted.signal`,
//! the restore's lease released, a running `pg_verifybackup` stopped, and a target that
//! cannot be started by mistake. Before, the process died of the signal (exit 143/130)
//! and left its lease, holding up `repo gc`.
//!
//! The restore is held at a known point by a stand-in `pg_verifybackup` (through
//! `--pg-bin-dir`) that records its pid and sleeps.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{init_and_backup, json_command, restore_args, Scratch};

fn stopped_restore(signal: &str) {
    let s = Scratch::new();
    let pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    let (url, _, _) = init_and_backup(&s, &pg, "sig");
    let bin = s.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let pidfile = s.path("verifier.pid");
    let verifier = bin.join("pg_verifybackup");
    std::fs::write(
        &verifier,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 120\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&verifier, std::fs::Permissions::from_mode(0o755)).unwrap();

    let target = s.path("restored");
    let extra = ["--pg-bin-dir", bin.to_str().unwrap()];
    let args = restore_args("sig", "latest", &target, &url, &extra);
    let child = json_command(&args, &s.keyring())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let verifier_pid = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile) {
            if !p.trim().is_empty() {
                break p.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "pg_verifybackup never ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    let sent = Instant::now();
    Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took {:?}",
        sent.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["error"]["code"], "aborted.signal", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("SIG{signal}")),
        "{v}"
    );
    // The lease is gone, the verifier was stopped, the target cannot start.
    let locks = s.leases();
    assert!(locks.is_empty(), "leases left behind: {locks:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{verifier_pid}")).exists() {
        assert!(Instant::now() < deadline, "pg_verifybackup still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!target.join("global/pg_control").exists());
}

#[test]
fn sigterm_during_restore_exits_5_releases_the_lease_and_stops_pg_verifybackup() {
    stopped_restore("TERM");
}

#[test]
fn sigint_during_restore_exits_5_releases_the_lease_and_stops_pg_verifybackup() {
    stopped_restore("INT");
}
