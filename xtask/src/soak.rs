//! `cargo xtask soak [--kills N] [--corruptions N] [--fault-rounds N] [--seed S] [--async]`:
//! the reliability suites at soak size, then a report.
//!
//! Builds `pg_hardstorage` (release) and runs the same drivers as the CI tests, bigger:
//! - `hs_testkit::crash::run_crash_suite` with N kills (default 100: 70 of `wal stream`,
//!   30 of `backup`) under load, then `--corruptions` damaged repository objects (default
//!   100) that `repo verify` must name and restores must refuse. By default the streamer is
//!   the synchronous standby, so every commit a client saw must survive; `--async` streams
//!   without it and waits for durability at the end.
//! - `hs_testkit::faults::run_fault_suite` with `--fault-rounds` rounds (default 200) of
//!   WAL and backups through the fault-injecting backend.
//!
//! It prints kills survived, faults injected, corruptions detected and transactions checked.

use anyhow::{bail, Context, Result};
use hs_testkit::crash::{run_crash_suite, CrashOptions};
use hs_testkit::faults::{run_fault_suite, FaultSuiteOptions};

use crate::util;

pub fn run(args: &[String]) -> Result<()> {
    let mut kills: u32 = 100;
    let mut seed: Option<u64> = None;
    let mut synchronous = true;
    let mut corruptions: u32 = 100;
    let mut fault_rounds: u32 = 200;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kills" => kills = util::flag_value(&mut it, "--kills", "a number", "a number")?,
            "--seed" => seed = Some(util::flag_value(&mut it, "--seed", "a number", "a number")?),
            "--corruptions" => {
                corruptions = util::flag_value(&mut it, "--corruptions", "a number", "a number")?
            }
            "--fault-rounds" => {
                fault_rounds = util::flag_value(&mut it, "--fault-rounds", "a number", "a number")?
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
    opts.corruptions = corruptions;
    let started = std::time::Instant::now();
    let report = run_crash_suite(&opts)?;
    let crash_secs = started.elapsed().as_secs_f64();

    let fault_started = std::time::Instant::now();
    let work = tempfile::tempdir().context("temp dir for the fault suite")?;
    let faults = run_fault_suite(
        work.path(),
        &FaultSuiteOptions {
            rounds: fault_rounds,
            seed: seed.map(|s| s ^ 0xFA17),
            pages: 400,
            verbose: false,
        },
    )?;
    let fault_secs = fault_started.elapsed().as_secs_f64();
    println!(
        "soak: passed in {:.0}s (crash suite {crash_secs:.0}s, seed {}; fault suite {fault_secs:.0}s, seed {})",
        started.elapsed().as_secs_f64(),
        report.seed,
        faults.seed
    );
    println!(
        "  kills survived:        {} ({} wal stream, {} backup; streamer {})",
        report.kills(),
        report.stream_kills,
        report.backup_kills,
        if synchronous {
            "synchronous"
        } else {
            "asynchronous"
        }
    );
    println!(
        "  transactions checked:  {} acknowledged commits, all present after restore to latest",
        report.transactions_checked
    );
    println!(
        "  backups completed:     {} (all {} listed restored and checked by pg_verifybackup)",
        report.backups_completed, report.backups_restored
    );
    // run_crash_suite fails unless `repo verify` ran clean over every pack and manifest.
    assert!(
        report.repo_verified,
        "the crash suite returned without repo verify"
    );
    println!("  repo verify:           clean after the kills (every pack and manifest checked)");
    println!(
        "  corruptions detected:  {} of {} (reads of damaged data refused: {}; reads that did not need the object: {}; healed from another copy: {})",
        report.corruptions_detected,
        corruptions,
        report.damaged_reads_refused,
        report.damaged_reads_unaffected,
        report.damaged_reads_healed
    );
    let f = &faults.faults;
    println!(
        "  faults injected:       {} in {} storage operations ({} temporary, {} permanent, {} torn writes, {} lost acks, {} disk full, {} latency spikes)",
        faults.faults_injected(),
        f.operations,
        f.temporary_errors,
        f.permanent_errors,
        f.torn_writes,
        f.errors_after_write,
        f.disk_full,
        f.latency_spikes
    );
    println!(
        "  fault rounds:          {} rough (all committed), {} failing; {} backups and {} WAL segments committed and intact; failures {:?}; repo verify clean ({} warnings)",
        faults.rough_rounds,
        faults.failing_rounds,
        faults.backups_committed,
        faults.wal_committed,
        faults.failures,
        faults.verify_warnings
    );
    Ok(())
}
