//! `cargo xtask soak [--kills N] [--seed S] [--async]`: the crash suite at soak size.
//!
//! Builds `pg_hardstorage` (release) and runs `hs_testkit::crash::run_crash_suite`, the
//! same driver as the CI test `crash::kill_9_of_stream_and_backup_under_load_...`, with
//! N kills (default 100: 70 of `wal stream`, 30 of `backup`), then prints what it survived.
//! By default the streamer is the synchronous standby (`--synchronous`), so every commit a
//! client saw must survive; `--async` streams without it and waits for durability at the end.

use anyhow::{bail, Context, Result};
use hs_testkit::crash::{run_crash_suite, CrashOptions};

use crate::util;

pub fn run(args: &[String]) -> Result<()> {
    let mut kills: u32 = 100;
    let mut seed: Option<u64> = None;
    let mut synchronous = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kills" => {
                kills = it
                    .next()
                    .context("--kills needs a number")?
                    .parse()
                    .context("--kills needs a number")?
            }
            "--seed" => {
                seed = Some(
                    it.next()
                        .context("--seed needs a number")?
                        .parse()
                        .context("--seed needs a number")?,
                )
            }
            "--async" => synchronous = false,
            other => bail!("cargo xtask soak: unknown argument {other:?}"),
        }
    }
    if kills < 2 {
        bail!("--kills must be at least 2 (one stream kill and one backup kill)");
    }
    util::ensure_postgres()?;
    let bin = util::build_release_binary()?;
    let mut opts = CrashOptions::new(bin);
    // The final kill after the load is a stream kill too.
    let during = kills - 1;
    opts.backup_kills = (during * 3 / 10).max(1);
    opts.stream_kills = during - opts.backup_kills;
    opts.clients = 3;
    opts.seed = seed;
    opts.verbose = true;
    opts.synchronous = synchronous;
    let started = std::time::Instant::now();
    let report = run_crash_suite(&opts)?;
    println!(
        "soak: passed in {:.0}s (seed {})",
        started.elapsed().as_secs_f64(),
        report.seed
    );
    println!(
        "  kills survived:        {} ({} wal stream, {} backup)",
        report.kills(),
        report.stream_kills,
        report.backup_kills
    );
    println!("  transactions checked:  {}", report.transactions_checked);
    println!(
        "  backups completed:     {} (all {} listed restored and verified)",
        report.backups_completed, report.backups_restored
    );
    println!(
        "  repo verify:           {}",
        if report.repo_verified {
            "passed"
        } else {
            "not available in this build"
        }
    );
    // The storage-fault and corruption suites are not wired into the soak yet.
    println!("  faults injected:       0");
    println!("  corruptions detected:  0");
    Ok(())
}
