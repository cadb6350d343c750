//! Crash suite, CI size: `wal stream` and `backup` killed with SIGKILL 20 times under load
//! (the driver is `hs_testkit::crash`; `cargo xtask soak` runs it with 100 kills). After the
//! kills the archived WAL has no gap, every listed backup restores and passes
//! pg_verifybackup, and a restore to the latest WAL holds every transaction a client saw
//! committed while the streamer was its synchronous standby. Then 14 repository objects
//! are damaged one at a time: `repo verify` names each, and reads of the damaged data fail
//! (or, for a damaged pack whose chunks all have an intact indexed copy elsewhere, are
//! served from that copy and pass pg_verifybackup: never a success with wrong data).

use hs_testkit::crash::{run_crash_suite, CrashOptions};

#[test]
fn kill_9_of_stream_and_backup_under_load_loses_no_acknowledged_commit() {
    let mut opts = CrashOptions::new(env!("CARGO_BIN_EXE_pg_hardstorage"));
    opts.stream_kills = 14;
    opts.backup_kills = 6;
    opts.verbose = true;
    // The streamer is the synchronous standby (the default): every commit a client saw
    // must survive the final SIGKILL. `HS_CRASH_ASYNC=1` runs the asynchronous variant.
    opts.synchronous = std::env::var_os("HS_CRASH_ASYNC").is_none();
    // Then every kind of repository object damaged at least once.
    opts.corruptions = 14;
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
    assert_eq!(report.corruptions_detected, 14, "{report:?}");
    assert!(report.damaged_reads_refused > 0, "{report:?}");
}
