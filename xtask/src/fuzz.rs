//! `cargo xtask fuzz [--time N] [TARGET...]`: run the cargo-fuzz targets in `fuzz/`.
//!
//! Each target runs N seconds (default 60) from its committed seed corpus
//! `fuzz/corpus/<target>/`; inputs libFuzzer finds interesting go to `fuzz/work/<target>/`
//! (not committed), crashes, timeouts and out-of-memory inputs to `fuzz/artifacts/<target>/`,
//! and libFuzzer's output to `fuzz/work/<target>.log`. No nightly toolchain is needed: the
//! targets build without a sanitizer (`--sanitizer none`) with `RUSTC_BOOTSTRAP=1`, in
//! release mode with debug assertions and overflow checks on (as the corpus replay test
//! runs them), so an arithmetic overflow is a crash here too. The fuzz binaries abort on
//! any single allocation over 64 MiB (`fuzz/src/alloc_limit.rs`: libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer), and an input that runs over 10 s is a timeout.
//!
//! The build goes to `$CARGO_TARGET_DIR` when set (under `x86_64-unknown-linux-gnu/release`,
//! apart from the workspace's own builds), else to `fuzz/target/`. cargo-fuzz is installed
//! with `cargo install cargo-fuzz --locked` when it is missing.
//!
//! At the end a table gives per target the executions, the coverage (`cov`: code edges
//! reached; `ft`: libFuzzer's finer features), the corpus size, the seconds libFuzzer ran
//! (`cargo fuzz run` first rebuilds when the tree changed; that is not counted) and the
//! result; the command exits non-zero if any target crashed, timed out or ran out of
//! memory. A crash input belongs in `fuzz/corpus/<target>/` once fixed (minimise it first
//! with `cargo fuzz tmin --sanitizer none --release --debug-assertions <target> <input>`
//! in `fuzz/`): the corpus replay test (`crates/hs-cli/tests/it/fuzz_corpus.rs`) then keeps
//! it fixed.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util;

const TARGETS: &[&str] = &[
    "proto_codec",
    "tar_parser",
    "wal_segment",
    "pack_header",
    "index",
    "manifest",
];

/// Seconds one input may run before libFuzzer reports a timeout (its default is 1200).
const INPUT_TIMEOUT_SECS: u64 = 10;
/// Resident memory at which libFuzzer reports out-of-memory.
const RSS_LIMIT_MB: u64 = 2048;

/// The build options every `cargo fuzz` call shares (so `run` reuses `build`'s output).
const BUILD_OPTS: &[&str] = &["--sanitizer", "none", "--release", "--debug-assertions"];

pub fn run(args: &[String]) -> Result<()> {
    let mut secs: u64 = 60;
    let mut only: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => secs = util::flag_value(&mut it, "--time", "seconds", "seconds")?,
            t if TARGETS.contains(&t) => only.push(t.to_owned()),
            other => bail!(
                "cargo xtask fuzz: unknown argument {other:?} (targets: {})",
                TARGETS.join(", ")
            ),
        }
    }
    if !util::succeeds("cargo", &["fuzz", "--version"]) {
        util::sh(util::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let fuzz_dir = util::workspace_root().join("fuzz");
    let targets: Vec<&str> = if only.is_empty() {
        TARGETS.to_vec()
    } else {
        only.iter().map(String::as_str).collect()
    };
    // Build every target first, with the output on the terminal: a first build takes
    // minutes, and `cargo fuzz run` would hide it in the log.
    util::sh(
        util::cargo()
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "build"])
            .args(BUILD_OPTS),
    )?;
    let mut reports = Vec::new();
    for t in targets {
        let work = fuzz_dir.join("work").join(t);
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(fuzz_dir.join("artifacts").join(t))?;
        let seeds = fuzz_dir.join("corpus").join(t);
        let mut cmd = util::cargo();
        cmd.current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run"])
            .args(BUILD_OPTS)
            .arg(t)
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
            .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
            .arg("-print_final_stats=1");
        // libFuzzer reports on stderr: keep it in a log, read the stats from there.
        let log_path = fuzz_dir.join("work").join(format!("{t}.log"));
        let log = std::fs::File::create(&log_path)?;
        eprintln!("$ {} 2> {}", util::show(&cmd), log_path.display());
        let started = Instant::now();
        let status = cmd
            .stdin(std::process::Stdio::null())
            .stderr(log)
            .status()
            .context("could not start cargo fuzz")?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let report = Report::from_log(t, &text, status.success(), started.elapsed().as_secs());
        if report.failed {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
        eprintln!("{}", report.line());
        reports.push(report);
    }
    println!("fuzz summary ({secs} s per target; logs and new inputs in fuzz/work/):");
    println!(
        "  {:12} {:>11} {:>6} {:>7} {:>9} {:>6}  result",
        "target", "executions", "cov", "ft", "corpus", "time"
    );
    for r in &reports {
        println!("  {}", r.line());
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.failed)
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) failed: {} (inputs in {})",
            failed.join(", "),
            Path::new("fuzz/artifacts").display()
        );
    }
    Ok(())
}

/// What one target's run came to, read from libFuzzer's log.
struct Report {
    target: String,
    execs: String,
    cov: String,
    ft: String,
    corpus: String,
    /// Seconds libFuzzer ran (its `Done N runs in S second(s)` line), else the wall time
    /// of `cargo fuzz run`, which includes any rebuild before it.
    secs: u64,
    result: String,
    failed: bool,
}

impl Report {
    fn from_log(target: &str, log: &str, ok: bool, wall_secs: u64) -> Report {
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .map(|s| s.trim().to_owned())
        };
        // The last status line: `#123 DONE cov: 740 ft: 1739 corp: 389/129Kb ...`.
        let last = log
            .lines()
            .rev()
            .find(|l| l.starts_with('#') && l.contains(" cov: "))
            .unwrap_or("");
        let field = |name: &str| {
            let mut words = last.split_whitespace();
            words
                .by_ref()
                .find(|w| *w == name)
                .and_then(|_| words.next())
                .unwrap_or("?")
                .to_owned()
        };
        let artifact = log
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .map(|s| s.trim().to_owned());
        let kind = if log.contains("ERROR: libFuzzer: timeout") {
            "TIMEOUT"
        } else if log.contains("ERROR: libFuzzer: out-of-memory")
            || log.contains("single allocation over")
        {
            "OUT OF MEMORY"
        } else if log.contains("panicked at") {
            "PANIC"
        } else {
            "CRASH"
        };
        let (result, failed) = match (ok, artifact) {
            (true, _) => ("no crash".to_owned(), false),
            (false, Some(a)) => (format!("{kind}: {a}"), true),
            (false, None) if last.is_empty() => {
                ("FAILED before fuzzing (see the log)".to_owned(), true)
            }
            (false, None) => (format!("{kind} (see the log)"), true),
        };
        // `Done 348191 runs in 16 second(s)`: the fuzzing time without the build.
        let secs = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Done ")?.split(" runs in ").nth(1))
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(wall_secs);
        Report {
            target: target.to_owned(),
            execs: stat("number_of_executed_units").unwrap_or_else(|| field_or_hash(last)),
            cov: field("cov:"),
            ft: field("ft:"),
            corpus: field("corp:"),
            secs,
            result,
            failed,
        }
    }

    fn line(&self) -> String {
        format!(
            "{:12} {:>11} {:>6} {:>7} {:>9} {:>5}s  {}",
            self.target, self.execs, self.cov, self.ft, self.corpus, self.secs, self.result
        )
    }
}

/// The execution count at the start of a status line (`#123`), when the final stats are
/// missing (a crash ends libFuzzer before it prints them).
fn field_or_hash(line: &str) -> String {
    line.split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix('#'))
        .unwrap_or("?")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_reads_libfuzzer_logs() {
        let ok = "#9\tINITED cov: 310 ft: 365 corp: 5/16248b exec/s: 0 rss: 28Mb\n\
                  #348191\tDONE   cov: 740 ft: 1739 corp: 389/129Kb lim: 6193 exec/s: 21761 rss: 35Mb\n\
                  Done 348191 runs in 16 second(s)\n\
                  stat::number_of_executed_units: 348191\n";
        let r = Report::from_log("proto_codec", ok, true, 16);
        assert_eq!(
            (r.execs.as_str(), r.cov.as_str(), r.ft.as_str()),
            ("348191", "740", "1739")
        );
        assert_eq!((r.corpus.as_str(), r.failed), ("389/129Kb", false));
        // libFuzzer's own seconds, not the wall time that includes the rebuild.
        assert_eq!(Report::from_log("proto_codec", ok, true, 95).secs, 16);

        let crash = "#1024\tpulse  cov: 80 ft: 90 corp: 10/1Kb exec/s: 512 rss: 30Mb\n\
                     thread '<unnamed>' panicked at src/lib.rs:1:1:\n\
                     ==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='a/'; Test unit written to a/crash-0123\n";
        let r = Report::from_log("index", crash, false, 3);
        assert!(r.failed);
        assert_eq!(r.execs, "1024");
        assert_eq!(r.result, "PANIC: a/crash-0123");

        let timeout = "#5\tINITED cov: 8 ft: 9 corp: 2/2b exec/s: 0 rss: 30Mb\n\
                       ==1== ERROR: libFuzzer: timeout after 10 seconds\n\
                       Test unit written to a/timeout-99\n";
        assert_eq!(
            Report::from_log("index", timeout, false, 12).result,
            "TIMEOUT: a/timeout-99"
        );
        let broken = Report::from_log("index", "error: no such target\n", false, 0);
        assert!(broken.failed && broken.result.starts_with("FAILED before"));
    }
}
