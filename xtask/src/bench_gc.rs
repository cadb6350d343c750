//! `cargo xtask bench gc [--scale N] [--backups B] [--keep-last K] [--transactions T]
//! [--max-unused PCT] [--bin PATH] [--keep]`: does `repo gc` give the space back?
//!
//! Issue 16's measure: after B daily-style backups (default 30) with churn between them
//! and `rotate --policy count --keep K` (default 7), the repository should be within 10%
//! of a fresh repository holding the same K backups. A pgbench database of scale N
//! (default 10) is backed up B times into repository A, with `pgbench -n -t T` (default
//! 5000 transactions, 2 clients), a VACUUM and a CHECKPOINT between backups (autovacuum
//! is off, so that nothing changes the cluster between A's and B's backup of a day). Each of the last K
//! backups is also taken, right after A's and with no transaction in between, into a
//! fresh repository B, so B holds the same K cluster states and nothing else. Then
//! `rotate --apply` and `repo gc --apply --grace 0s --max-unused PCT` (default 5) run on
//! A, and a second gc (which must find nothing to do), and the table gives A's bytes
//! at each step against B's. Last, the oldest kept backup is restored from A and its
//! `verify` run, and `repo verify` of A (every remaining backup reads back).
//!
//! `--bin` runs a given `pg_hardstorage` (default: the workspace's debug build, built
//! first; the measure is bytes, not time).

use crate::bench::{human, pgbench_init, with_scratch, Hs};
use crate::util::{self, dir_bytes, sh};
use anyhow::{bail, Context, Result};
use hs_testkit::{PgCluster, PgOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    scale: u32,
    backups: u32,
    keep_last: u32,
    transactions: u32,
    max_unused: String,
    bin: Option<PathBuf>,
    keep: bool,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut a = Args {
        scale: 10,
        backups: 30,
        keep_last: 7,
        transactions: 5000,
        max_unused: "5".into(),
        bin: None,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => a.scale = util::flag_number(&mut it, "--scale")?,
            "--backups" => a.backups = util::flag_number(&mut it, "--backups")?,
            "--keep-last" => a.keep_last = util::flag_number(&mut it, "--keep-last")?,
            "--transactions" => a.transactions = util::flag_number(&mut it, "--transactions")?,
            "--max-unused" => {
                a.max_unused =
                    util::flag_value(&mut it, "--max-unused", "a percentage", "a percentage")?
            }
            "--bin" => a.bin = Some(util::flag_value(&mut it, "--bin", "a path", "a path")?),
            "--keep" => a.keep = true,
            other => bail!("cargo xtask bench gc: unknown argument {other:?}"),
        }
    }
    if a.scale == 0 || a.keep_last == 0 || a.backups < a.keep_last {
        bail!("--scale and --keep-last must be at least 1, and --backups at least --keep-last");
    }
    util::ensure_postgres()?;
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => {
            sh(util::cargo().args(["build", "-p", "hs-cli", "--bin", "pg_hardstorage"]))?;
            util::target_dir().join("debug").join("pg_hardstorage")
        }
    };
    with_scratch("xtask bench gc", a.keep, |work| run_in(work, &bin, &a))
}

/// `pg_hardstorage ... -o json`, parsed.
fn json(hs: &Hs, args: &[&str]) -> Result<serde_json::Value> {
    let mut cmd = hs.cmd(args);
    cmd.args(["-o", "json"]);
    let out = util::run_capture(&mut cmd)?;
    let doc: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("parsing the output of {args:?}: {out}"))?;
    Ok(doc["result"].clone())
}

fn run_in(work: &Path, bin: &Path, a: &Args) -> Result<()> {
    // No autovacuum: A's and B's backups of one day must see the same cluster (a
    // vacuum between them would make A keep pages B never saw); the churn vacuums.
    let pg = PgCluster::start(PgOptions {
        extra_conf: crate::bench::load_settings(&["autovacuum = off"]),
        ..PgOptions::default()
    })?;
    pgbench_init(&pg, a.scale)?;
    let conninfo = pg.replication_conninfo();
    let hs_a = Hs::new(bin, &work.join("a"));
    let hs_b = Hs::new(bin, &work.join("b"));
    for (hs, dir) in [(&hs_a, "a"), (&hs_b, "b")] {
        std::fs::create_dir_all(work.join(dir))?;
        hs.init_repo()?;
    }
    let t = Instant::now();
    for day in 1..=a.backups {
        if day > 1 {
            let mut churn = pg.client_command("pgbench");
            churn.args(["-n", "-c", "2", "-j", "2", "-t"]);
            churn.arg((a.transactions / 2).max(1).to_string());
            sh(&mut churn)?;
            pg.psql("VACUUM")?;
            pg.psql("CHECKPOINT")?;
        }
        sh(&mut hs_a.backup(&conninfo))?;
        if day > a.backups - a.keep_last {
            sh(&mut hs_b.backup(&conninfo))?;
        }
        eprintln!(
            "day {day}/{}: A {}, B {} ({:.0}s)",
            a.backups,
            human(dir_bytes(&hs_a.dir)?),
            human(dir_bytes(&hs_b.dir)?),
            t.elapsed().as_secs_f64()
        );
    }
    let db = crate::bench::database_bytes(&pg)?;
    drop(pg);

    let before = dir_bytes(&hs_a.dir)?;
    let keep = a.keep_last.to_string();
    let rotate = json(
        &hs_a,
        &[
            "rotate", "bench", "--repo", &hs_a.url, "--policy", "count", "--keep", &keep, "--apply",
        ],
    )?;
    let rotated = dir_bytes(&hs_a.dir)?;
    let gc_args = [
        "repo",
        "gc",
        "--repo",
        &hs_a.url,
        "--grace",
        "0s",
        "--max-unused",
        &a.max_unused,
        "--apply",
    ];
    let t = Instant::now();
    let gc = json(&hs_a, &gc_args)?;
    let gc_secs = t.elapsed().as_secs_f64();
    let after = dir_bytes(&hs_a.dir)?;
    let gc2 = json(&hs_a, &gc_args)?;
    let after2 = dir_bytes(&hs_a.dir)?;
    let fresh = dir_bytes(&hs_b.dir)?;

    // Every kept backup still reads back.
    sh(&mut hs_a.cmd(&["repo", "verify", "--repo", &hs_a.url]))?;
    let target = work.join("restored");
    sh(&mut hs_a.restore(&target.display().to_string(), &["--no-recovery"]))?;

    report(
        a, db, before, rotated, after, after2, fresh, gc_secs, &rotate, &gc, &gc2,
    );
    if gc2["repacked"].as_array().is_some_and(|r| !r.is_empty()) {
        bail!("the second gc repacked again: {gc2}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one table of what was measured
fn report(
    a: &Args,
    db: u64,
    before: u64,
    rotated: u64,
    after: u64,
    after2: u64,
    fresh: u64,
    gc_secs: f64,
    rotate: &serde_json::Value,
    gc: &serde_json::Value,
    gc2: &serde_json::Value,
) {
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let len = |v: &serde_json::Value, k: &str| v[k].as_array().map_or(0, Vec::len);
    println!(
        "\nbench gc: pgbench scale {}, {} backups with pgbench -t {} between, rotate --keep {}, \
         gc --grace 0s --max-unused {}%",
        a.scale, a.backups, a.transactions, a.keep_last, a.max_unused
    );
    println!("cluster databases: {}", human(db));
    println!("| repository | bytes | vs fresh |");
    println!("|---|---|---|");
    let row = |what: &str, b: u64| {
        println!(
            "| {what} | {} ({b}) | {:.3}x |",
            human(b),
            b as f64 / fresh.max(1) as f64
        )
    };
    row(&format!("A after {} backups", a.backups), before);
    row("A after rotate --apply", rotated);
    row("A after repo gc --apply", after);
    row("A after a second gc", after2);
    row(
        &format!("B: fresh, the same {} backups", a.keep_last),
        fresh,
    );
    println!(
        "rotate deleted {} backups; gc ({gc_secs:.1}s): condemned {} unreferenced ({}), \
         repacked {} ({}, {} live copied into {} new), deleted {} ({}), reprieved {}, \
         waiting {}; unused before {} of {} used",
        rotate["deleted"]["backups"],
        len(gc, "condemned"),
        human(n(gc, "condemned_bytes")),
        len(gc, "repacked"),
        human(n(gc, "repacked_bytes")),
        human(n(gc, "repack_copied_bytes")),
        len(gc, "repack_new_packs"),
        len(gc, "deleted"),
        human(n(gc, "deleted_bytes")),
        len(gc, "reprieved"),
        len(gc, "waiting"),
        human(n(gc, "unused_bytes")),
        human(n(gc, "used_bytes")),
    );
    println!(
        "second gc: repacked {}, deleted {}; kept: {}",
        len(gc2, "repacked"),
        len(gc2, "deleted"),
        gc2["kept"]
    );
    let ratio = after as f64 / fresh.max(1) as f64;
    println!(
        "RESULT ratio={ratio:.3} goal<=1.10 {}",
        if ratio <= 1.10 { "met" } else { "NOT met" }
    );
}
