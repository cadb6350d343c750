//! `cargo xtask bench index [--chunks N[,N...]] [--change PCT] [--reserve-gib G]
//! [--glibc-defaults] [--bin PATH] [--keep]`: the synthetic index benchmark of issue 15. For
//! each N of the curve (default 1M, 10M, 30M, 100M chunk ids) it drives N chunk ids through
//! the real dedup and index path of hs-repo (`ChunkWriter`, chunk lists, manifests,
//! `Repository::gc`) on a file:// repository in a scratch directory, with the release build
//! of hs-repo's `index_bench` example (see crates/hs-repo/examples/index_bench.rs for what
//! each phase does):
//!
//! 1. `full`: a first backup of N unique tiny pages (32 bytes each, in files of 131072
//!    pages), with its chunk lists and manifest;
//! 2. `orphan`: an interrupted retry of the second backup: its changed pages (`--change`
//!    percent, default 1, in whole groups of 1024 pages) written, no manifest;
//! 3. `again`: the second backup: every page again with the parent's reference as the
//!    hint, the changed pages new (found in the orphan's index objects, at most
//!    `RECENT_INDEX_CHUNKS` of them, or stored again);
//! 4. `gc`: `repo gc` dry run (grace 0);
//! 5. `gc --apply`: the same, applied (deletes the orphan's unreferenced packs and
//!    rewrites the index objects that name them).
//!
//! Each phase is its own process under `/usr/bin/time` (GNU time): peak RSS (`%M`), wall,
//! CPU (user + system; the wall time depends on what else runs on the machine, the CPU time
//! much less). Dedup lookups are the `add_hinted` calls (one per page); lookups/s is their
//! number over the time of the add loop (ids, dedup, chunk lists; not `finish` nor the
//! manifest). After the curve, RSS is projected along the line through its two largest
//! points and wall/CPU in proportion to the ids, to 130 million ids (1 TB of 8 KiB pages)
//! and 1.3 billion (10 TB).
//!
//! Disk: about 140 bytes per id (pack headers, index objects and chunk lists hold each id;
//! the pages are tiny): 100M ids need about 14 GB. Each N runs in its own directory, deleted
//! after it unless `--keep`; the harness stops before an N that would leave less than
//! `--reserve-gib` (default 2) GiB free, and reports the points it measured. `--bin` uses a
//! prebuilt `index_bench` instead of building it. Each phase runs with the malloc setting
//! pg_hardstorage gives itself (a fixed 1 MiB mmap threshold, as a glibc tunable) unless
//! `--glibc-defaults`.

use crate::bench::{human, with_scratch};
use crate::util::{self, sh};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// GNU time, which reports the peak RSS (`%M`, KiB) of what it runs.
const GNU_TIME: &str = "/usr/bin/time";
/// The default curve.
const DEFAULT_CURVE: &str = "1M,10M,30M,100M";
/// Disk per chunk id, measured with the 32-byte ids of format 2: 129 bytes for the first
/// backup (pack header entry, index entry, chunk list entry, the page), rounded up for the
/// rest. Format 3 stores 48 bytes less per id; the bound is kept as a safe overestimate
/// until it is measured again.
const DISK_PER_ID: u64 = 140;
/// Projection points: 1 TB and 10 TB of 8 KiB pages.
const PROJECT: [(&str, f64); 2] = [("1 TB", 1.3e8), ("10 TB", 1.3e9)];
/// The malloc setting `pg_hardstorage` applies to itself at start (hs-cli's alloc.rs:
/// `mallopt(M_MMAP_THRESHOLD, 1 MiB)`, which also turns glibc's threshold adjustment off, and
/// `mallopt(M_TRIM_THRESHOLD, 4 MiB)`),
/// given to each phase as the equivalent glibc tunable, so that the example's RSS is the
/// one the shipped binary would have. `--glibc-defaults` leaves it out.
const CLI_MALLOC: (&str, &str) = (
    "GLIBC_TUNABLES",
    "glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=4194304",
);
/// The phases, in order, with their labels in the table.
const PHASES: [(&str, &str); 5] = [
    ("full", "backup, fresh"),
    ("orphan", "interrupted retry"),
    ("again", "backup, unchanged + changes"),
    ("gc", "repo gc (dry run)"),
    ("gc-apply", "repo gc --apply"),
];

struct Opts {
    curve: Vec<u64>,
    change: f64,
    bin: Option<PathBuf>,
    keep: bool,
    /// Free disk (GiB) to leave beyond what a curve point needs.
    reserve_gib: u64,
    /// Leave glibc's malloc settings at their defaults (see [`CLI_MALLOC`]).
    glibc_defaults: bool,
}

/// One measured phase.
struct Row {
    ids: u64,
    phase: &'static str,
    wall: Duration,
    cpu: f64,
    rss_kib: u64,
    /// The `RESULT` line's fields.
    result: Vec<(String, String)>,
}

impl Row {
    fn field(&self, k: &str) -> Option<&str> {
        self.result
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// The phase's peak heap in MiB (its `peak_heap` field), if it reported one.
    fn heap_mib(&self) -> Option<f64> {
        self.field("peak_heap")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|b| b / (1024.0 * 1024.0))
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    if !Path::new(GNU_TIME).is_file() {
        bail!("{GNU_TIME} (GNU time) is missing: install it with `sudo apt-get install -y time`");
    }
    let bin = match &o.bin {
        Some(b) if b.is_file() => b.clone(),
        Some(b) => bail!("--bin {}: no such file", b.display()),
        None => build()?,
    };
    with_scratch("xtask bench index", o.keep, |work| {
        let mut rows = Vec::new();
        let mut disk = Vec::new();
        let mut skipped = false;
        let started = Instant::now();
        for &n in &o.curve {
            let dir = work.join(format!("ids-{n}"));
            let free = util::disk_free(work)?;
            let need = n * DISK_PER_ID + (o.reserve_gib << 30);
            if free < need {
                // The points measured so far are still reported.
                eprintln!(
                    "xtask bench index: SKIPPED {n} ids and the rest of the curve: they need \
                     about {} of free disk and {} has {}; free some space or pass a shorter \
                     --chunks",
                    human(need),
                    work.display(),
                    human(free)
                );
                skipped = true;
                break;
            }
            let res = curve_point(&bin, &dir, n, &o, &mut rows);
            disk.push((n, util::dir_bytes(&dir.join("repo")).unwrap_or(0)));
            if !o.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            if let Err(e) = res {
                // The points measured so far are still reported.
                report(&o, &rows, &disk, started.elapsed());
                return Err(e);
            }
        }
        report(&o, &rows, &disk, started.elapsed());
        if skipped {
            bail!("the curve stopped early for lack of disk (see SKIPPED above)");
        }
        Ok(())
    })
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        curve: parse_curve(DEFAULT_CURVE)?,
        change: 1.0,
        bin: None,
        keep: false,
        reserve_gib: 2,
        glibc_defaults: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--chunks" => o.curve = parse_curve(it.next().context("--chunks needs a number")?)?,
            "--change" => {
                o.change = util::flag_value(&mut it, "--change", "a percentage", "a number")?
            }
            "--bin" => o.bin = Some(PathBuf::from(it.next().context("--bin needs a path")?)),
            "--keep" => o.keep = true,
            "--glibc-defaults" => o.glibc_defaults = true,
            "--reserve-gib" => o.reserve_gib = util::flag_number(&mut it, "--reserve-gib")?,
            other => bail!("cargo xtask bench index: unknown argument {other:?}"),
        }
    }
    if !(0.0..=100.0).contains(&o.change) {
        bail!("--change must be a percentage (0 to 100)");
    }
    Ok(o)
}

/// `1M,10M,100000` -> [1000000, 10000000, 100000]: counts with an optional K, M or G
/// (powers of 1000), sorted, each at least 1.
fn parse_curve(s: &str) -> Result<Vec<u64>> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (num, mult) = match part.char_indices().last() {
            Some((i, 'k' | 'K')) => (&part[..i], 1_000),
            Some((i, 'm' | 'M')) => (&part[..i], 1_000_000),
            Some((i, 'g' | 'G')) => (&part[..i], 1_000_000_000),
            _ => (part, 1),
        };
        let n: u64 = num
            .parse()
            .with_context(|| format!("--chunks: {part:?} is not a count like 100M"))?;
        if n == 0 {
            bail!("--chunks: counts must be at least 1");
        }
        v.push(n * mult);
    }
    v.sort_unstable();
    Ok(v)
}

/// Builds the release `index_bench` example of hs-repo.
fn build() -> Result<PathBuf> {
    sh(util::cargo().args([
        "build",
        "--release",
        "-p",
        "hs-repo",
        "--example",
        "index_bench",
    ]))?;
    let bin = util::target_dir().join("release/examples/index_bench");
    if !bin.is_file() {
        bail!("built, but {} is not there", bin.display());
    }
    Ok(bin)
}

/// Every phase for `n` ids in `dir`.
fn curve_point(bin: &Path, dir: &Path, n: u64, o: &Opts, rows: &mut Vec<Row>) -> Result<()> {
    eprintln!("\n==> {n} ids in {}", dir.display());
    let common = |phase: &str| {
        let mut c = Command::new(bin);
        c.arg(phase).arg(dir).args([
            "--chunks",
            &n.to_string(),
            "--change",
            &o.change.to_string(),
        ]);
        if !o.glibc_defaults {
            c.env(CLI_MALLOC.0, CLI_MALLOC.1);
        }
        c
    };
    measure(&common("init"), dir, "init")?;
    for (phase, _) in PHASES {
        if phase == "orphan" {
            // Index objects count as newer than the parent only in a later second.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let (wall, cpu, rss_kib, result) = measure(&common(phase), dir, phase)?;
        let row = Row {
            ids: n,
            phase,
            wall,
            cpu,
            rss_kib,
            result,
        };
        eprintln!(
            "    {phase}: {:.1} s wall, {:.1} s CPU, {:.0} MiB peak RSS",
            row.wall.as_secs_f64(),
            row.cpu,
            row.rss_mib()
        );
        rows.push(row);
    }
    Ok(())
}

type Measured = (Duration, f64, u64, Vec<(String, String)>);

/// Runs `cmd` under GNU time: wall, CPU seconds, peak RSS (KiB) and its `RESULT` fields.
/// Its stderr goes to `<dir>/<phase>.log`.
fn measure(cmd: &Command, dir: &Path, phase: &str) -> Result<Measured> {
    let _ = std::fs::create_dir_all(dir);
    let time_file = dir.join(format!("{phase}.time"));
    let log = dir.join(format!("{phase}.log"));
    let mut t = Command::new(GNU_TIME);
    t.args(["-f", "%M %U %S", "-o"])
        .arg(&time_file)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    eprintln!("$ {}", util::show(&t));
    let start = Instant::now();
    let out = t
        .output()
        .with_context(|| format!("could not start {phase}"))?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "phase {phase} failed ({}); its log {}:\n{}",
            out.status,
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let time_text = std::fs::read_to_string(&time_file)?;
    let (rss_kib, cpu) = parse_time(&time_text)
        .with_context(|| format!("unexpected GNU time output {time_text:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = parse_result(&stdout)
        .with_context(|| format!("phase {phase} printed no RESULT line: {stdout:?}"))?;
    Ok((wall, cpu, rss_kib, result))
}

/// `%M %U %S` (its last non-empty line): peak RSS in KiB and user + system seconds.
fn parse_time(text: &str) -> Option<(u64, f64)> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut f = line.split_whitespace();
    let rss = f.next()?.parse().ok()?;
    let user: f64 = f.next()?.parse().ok()?;
    let sys: f64 = f.next()?.parse().ok()?;
    Some((rss, user + sys))
}

/// The `key=value` fields of the line starting with `RESULT `.
fn parse_result(stdout: &str) -> Option<Vec<(String, String)>> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The line through the two largest-x points: (x and y of the largest, slope); `None` with
/// fewer than two distinct x. Bounded tables (session ids, recent index ids, pending index
/// entries) fill up in the first millions of ids, so the top of the curve is what
/// extrapolates; a line over every point would count their filling as growth.
fn marginal(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let mut p = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let [.., (x1, y1), (x2, y2)] = p[..] else {
        return None;
    };
    if x2 == x1 {
        return None;
    }
    Some((x2, y2, (y2 - y1) / (x2 - x1)))
}

fn millions(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else {
        format!("{:.2}M", n as f64 / 1e6)
    }
}

fn report(o: &Opts, rows: &[Row], disk: &[(u64, u64)], total: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let malloc = if o.glibc_defaults {
        "glibc malloc defaults".to_string()
    } else {
        format!(
            "{}={} (as pg_hardstorage sets it)",
            CLI_MALLOC.0, CLI_MALLOC.1
        )
    };
    println!(
        "\n## Synthetic index benchmark (cargo xtask bench index), {cores} cores, change {}%, \
         {malloc}, total {:.0} s\n",
        o.change,
        total.as_secs_f64()
    );
    println!(
        "| ids | phase | wall s | CPU s | peak RSS MiB | peak heap MiB | dedup lookups | lookups/s \
         | new chunks | packs | notes |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let label = PHASES
            .iter()
            .find(|(p, _)| *p == r.phase)
            .map_or(r.phase, |(_, l)| l);
        let f = |k: &str| r.field(k).unwrap_or("-").to_string();
        let notes = if r.phase.starts_with("gc") {
            format!(
                "{} packs, {} condemned, {} deleted, {} index objects replaced",
                f("packs"),
                f("condemned"),
                f("deleted"),
                f("index_objects_replaced")
            )
        } else {
            format!("{} index objects in the repository", f("index_objects"))
        };
        let packs = if r.phase.starts_with("gc") {
            "-".to_string()
        } else {
            f("packs")
        };
        println!(
            "| {} | {label} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {} | {packs} | {notes} |",
            millions(r.ids),
            r.wall.as_secs_f64(),
            r.cpu,
            r.rss_mib(),
            r.heap_mib().map_or("-".to_string(), |h| format!("{h:.1}")),
            f("adds"),
            f("lookups_per_s"),
            f("new"),
        );
    }
    println!("\nRepository size after each curve point:");
    for (n, b) in disk {
        println!(
            "- {}: {} ({:.0} bytes per id)",
            millions(*n),
            human(*b),
            *b as f64 / *n as f64
        );
    }
    print_projection(rows);
}

/// The projection table: RSS, wall and CPU of each phase at 1 TB and 10 TB.
fn print_projection(rows: &[Row]) {
    println!(
        "\n### Projection\n\nRSS: from the largest point along the line through the two \
         largest points of the curve, of RSS and (after the slash) of the peak heap (a \
         negative slope is projected as flat). Wall and CPU: proportional to the ids, at the \
         largest point's rate.\n"
    );
    let head: Vec<String> = PROJECT
        .iter()
        .map(|(l, _)| format!("RSS at {l} MiB | wall at {l} | CPU at {l}"))
        .collect();
    println!(
        "| phase | RSS at the largest point MiB | RSS growth MiB per 100M ids | heap growth MiB \
         per 100M ids | {} |",
        head.join(" | ")
    );
    println!(
        "|---|---:|---:|---:|{}",
        "---:|---:|---:|".repeat(PROJECT.len())
    );
    for (phase, label) in PHASES {
        let pts: Vec<&Row> = rows.iter().filter(|r| r.phase == phase).collect();
        let rss = marginal(
            &pts.iter()
                .map(|r| (r.ids as f64, r.rss_mib()))
                .collect::<Vec<_>>(),
        );
        let (Some((x, y, b)), Some(top)) = (rss, pts.iter().max_by_key(|r| r.ids)) else {
            println!("| {label} | (fewer than two points: no projection) |");
            continue;
        };
        let heap = marginal(
            &pts.iter()
                .filter_map(|r| r.heap_mib().map(|h| (r.ids as f64, h)))
                .collect::<Vec<_>>(),
        )
        .map(|(_, _, hb)| hb);
        let per_id = |v: f64| v / top.ids as f64;
        let cols: Vec<String> = PROJECT
            .iter()
            .map(|(_, at)| {
                let by_heap = heap.map_or(String::new(), |hb| {
                    format!(" / {:.0}", y + hb.max(0.0) * (at - x))
                });
                format!(
                    "{:.0}{by_heap} | {:.0} min | {:.0} min",
                    y + b.max(0.0) * (at - x),
                    per_id(top.wall.as_secs_f64()) * at / 60.0,
                    per_id(top.cpu) * at / 60.0,
                )
            })
            .collect();
        println!(
            "| {label} | {y:.0} | {:+.1} | {} | {} |",
            b * 1e8,
            heap.map_or("-".to_string(), |hb| format!("{:+.1}", hb * 1e8)),
            cols.join(" | ")
        );
    }
    println!(
        "\nRSS is GNU time's peak resident set of the phase's process; the peak heap is the \
         most the phase's heap held at once (the example's counting allocator). RSS also holds \
         what malloc keeps for reuse, which grows with a run's length; the heap is what the \
         data structures need. A growth near 0 means memory flat in the number of ids. Wall \
         times depend on the machine's load; CPU time less so."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_counts_take_suffixes_and_sort() {
        assert_eq!(
            parse_curve("100M,1M, 30k,7").unwrap(),
            vec![7, 30_000, 1_000_000, 100_000_000]
        );
        assert_eq!(parse_curve("1G").unwrap(), vec![1_000_000_000]);
        assert!(parse_curve("0").is_err());
        assert!(parse_curve("M").is_err());
        assert!(parse_curve("1.5M").is_err());
    }

    #[test]
    fn time_and_result_lines_parse() {
        assert_eq!(
            parse_time("Command exited with non-zero status 1\n1234 1.50 0.25\n"),
            Some((1234, 1.75))
        );
        assert_eq!(parse_time(""), None);
        let r = parse_result("noise\nRESULT phase=full adds=10 lookups_per_s=5\n").unwrap();
        assert_eq!(r[1], ("adds".to_string(), "10".to_string()));
        assert!(parse_result("nothing").is_none());
    }

    #[test]
    fn marginal_is_the_line_through_the_top_two_points() {
        let (x, y, b) = marginal(&[(30.0, 5.0), (1.0, 100.0), (10.0, 3.0)]).unwrap();
        assert_eq!((x, y), (30.0, 5.0));
        assert!((b - 0.1).abs() < 1e-9);
        assert!(marginal(&[(1.0, 1.0)]).is_none());
        assert!(marginal(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
