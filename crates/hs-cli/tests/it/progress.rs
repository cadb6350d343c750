//! Progress of `backup` without a terminal (cron, systemd): a line on stderr every
//! `--progress-interval` seconds instead of the bar, never above 100%, none with
//! `--progress-interval 0`.

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{human, init_repo, Scratch};

#[test]
fn backup_without_a_terminal_prints_progress_lines() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    pg.pgbench(&["-i", "-s", "3"]).expect("pgbench -i");
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    // 8 MiB/s for about 50 MiB: several seconds, so several lines at one a second.
    let out = human(
        &s,
        &[
            "backup",
            "demo",
            "--pg-connection",
            &conn,
            "--repo",
            &url,
            "--max-rate",
            "8192",
            "--progress-interval",
            "1",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Backup "), "{stdout}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("backup progress: "))
        .collect();
    assert!(lines.len() >= 2, "expected a line a second:\n{stderr}");
    for line in &lines {
        assert!(
            line.contains("/s, ") && line.ends_with(" elapsed"),
            "{line}"
        );
        if let Some(pct) = line.split('(').nth(1).and_then(|r| r.split('%').next()) {
            let pct: f64 = pct.parse().unwrap();
            assert!(pct <= 100.0, "{line}");
        }
    }
    assert!(!stderr.contains('\u{1b}'), "{stderr}");

    // --progress-interval 0: none.
    let none = human(
        &s,
        &[
            "backup",
            "demo",
            "--pg-connection",
            &conn,
            "--repo",
            &url,
            "--max-rate",
            "32768",
            "--progress-interval",
            "0",
        ],
    );
    assert!(none.status.success());
    assert!(
        !String::from_utf8_lossy(&none.stderr).contains("progress"),
        "{none:?}"
    );
}
