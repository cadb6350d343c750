//! `cargo xtask fuzz [--time N] [TARGET...]`: run the cargo-fuzz targets in `fuzz/`.
//!
//! Each target runs N seconds (default 60) from its committed seed corpus
//! `fuzz/corpus/<target>/`; inputs libFuzzer finds interesting go to `fuzz/work/<target>/`
//! (not committed), crashes to `fuzz/artifacts/<target>/`. No nightly toolchain is needed:
//! the targets build without a sanitizer (`--sanitizer none`) with `RUSTC_BOOTSTRAP=1`.
//! cargo-fuzz is installed with `cargo install cargo-fuzz --locked` when it is missing.
//! A crash input belongs in `fuzz/corpus/<target>/` once fixed: the corpus replay test
//! (`crates/hs-cli/tests/it/fuzz_corpus.rs`) then keeps it fixed.

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

pub fn run(args: &[String]) -> Result<()> {
    let mut secs: u64 = 60;
    let mut only: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                secs = it
                    .next()
                    .context("--time needs seconds")?
                    .parse()
                    .context("--time needs seconds")?
            }
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
    let mut summary = Vec::new();
    for t in targets {
        let work = fuzz_dir.join("work").join(t);
        std::fs::create_dir_all(&work)?;
        let seeds = fuzz_dir.join("corpus").join(t);
        let mut cmd = util::cargo();
        cmd.current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--sanitizer", "none", "--release", t])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg("-print_final_stats=1");
        // libFuzzer reports on stderr: keep it in a log, read the stats from there.
        let log_path = fuzz_dir.join("work").join(format!("{t}.log"));
        let log = std::fs::File::create(&log_path)?;
        eprintln!("$ {} 2> {}", util::show(&cmd), log_path.display());
        let status = cmd
            .stdin(std::process::Stdio::null())
            .stderr(log)
            .status()
            .context("could not start cargo fuzz")?;
        let ok = status.success();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let execs = text
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "?".into());
        summary.push(format!(
            "{t:12} {} executions in {secs}s: {}",
            execs,
            if ok {
                "no crash"
            } else {
                "FAILED (see above; input in fuzz/artifacts)"
            }
        ));
        if !ok {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
    }
    println!("fuzz summary:");
    for l in &summary {
        println!("  {l}");
    }
    if summary.iter().any(|l| l.contains("FAILED")) {
        bail!("a fuzz target failed");
    }
    Ok(())
}
