//! `cargo xtask bench backends [--scale N] [--bin PATH] [--keep]`: backup throughput and
//! object count per GB to an S3 server (moto on 127.0.0.1) versus file://, same cluster,
//! same run.
//!
//! A pgbench database of scale N (default 20) is backed up once into a fresh file://
//! repository and once into a fresh bucket on moto. For each: wall time of
//! `pg_hardstorage backup`, logical bytes (from its JSON result), MB/s of logical data,
//! objects in the repository and objects per GB of logical data; then the wall ratio
//! s3/file. moto keeps objects in memory, so the figure measures the client's request
//! pattern (multipart, parallel uploads, signing) more than a real network.
//! `--bin` uses a prebuilt binary instead of building the release one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hs_testkit::{http_request, PgCluster, PgOptions, StorageServer};

use crate::bench::{human, pgbench_init, with_scratch};
use crate::util::{self, run_capture, sh};

struct Row {
    store: &'static str,
    wall: f64,
    logical: u64,
    stored: u64,
    objects: u64,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut scale: u32 = 20;
    let mut bin: Option<PathBuf> = None;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => scale = util::flag_number(&mut it, "--scale")?,
            "--bin" => bin = Some(PathBuf::from(it.next().context("--bin needs a path")?)),
            "--keep" => keep = true,
            other => bail!("cargo xtask bench backends: unknown argument {other:?}"),
        }
    }
    if scale == 0 {
        bail!("--scale must be at least 1");
    }
    util::ensure_postgres()?;
    util::ensure_storage_servers()?;
    let bin = match bin {
        Some(b) => b,
        None => util::build_release_binary()?,
    };
    with_scratch("xtask bench", keep, |work| run_in(work, &bin, scale))
}

/// The number after `"key":` in a JSON document (flat search; enough for our output).
fn json_u64(doc: &str, key: &str) -> Option<u64> {
    let at = doc.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = doc[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn xml_values<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Objects and bytes under `prefix` in a moto bucket (ListObjectsV2, page by page).
fn s3_count(port: u16, bucket: &str, prefix: &str) -> Result<(u64, u64)> {
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/{bucket}?list-type=2&prefix={}", percent_encode(prefix));
        if let Some(t) = &token {
            path.push_str(&format!("&continuation-token={}", percent_encode(t)));
        }
        let (status, body) = http_request(port, "GET", &path, &[], b"")?;
        if status != 200 {
            bail!("listing the bucket: HTTP {status}");
        }
        for size in xml_values(&body, "Size") {
            n += 1;
            bytes += size.parse::<u64>().unwrap_or(0);
        }
        token = xml_values(&body, "NextContinuationToken")
            .first()
            .map(|t| t.to_string());
        if xml_values(&body, "IsTruncated").first() != Some(&"true") || token.is_none() {
            return Ok((n, bytes));
        }
    }
}

fn count_files(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += count_files(&e.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

fn run_in(work: &Path, bin: &Path, scale: u32) -> Result<()> {
    let pg = PgCluster::start(PgOptions::default())?;
    pgbench_init(&pg, scale)?;

    let moto = StorageServer::moto().context("start moto (pip install 'moto[server]')")?;
    let bucket = moto.bucket("bench")?;
    let keyring = work.join("keyring");
    let conninfo = pg.replication_conninfo();
    let hs = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .arg("--keyring")
            .arg(&keyring)
            .args(["-o", "json"])
            .envs(bucket.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    };

    let file_dir = work.join("file-repo");
    let file_url = format!("file://{}", file_dir.display());
    let mut rows = Vec::new();
    for (store, url) in [
        ("file://", file_url.as_str()),
        ("s3:// (moto)", bucket.url.as_str()),
    ] {
        eprintln!("\n==> {store}: repo init, backup");
        sh(&mut hs(&["repo", "init", url]))?;
        let t = Instant::now();
        let out = run_capture(&mut hs(&[
            "backup",
            "bench",
            "--pg-connection",
            &conninfo,
            "--repo",
            url,
        ]))?;
        let wall = t.elapsed().as_secs_f64();
        let logical = json_u64(&out, "logical_bytes").context("backup JSON has logical_bytes")?;
        let (objects, stored) = if store == "file://" {
            (count_files(&file_dir)?, util::dir_bytes(&file_dir)?)
        } else {
            s3_count(moto.port(), "bench", "repo/")?
        };
        eprintln!("    wall {wall:.2}s, {objects} objects");
        rows.push(Row {
            store,
            wall,
            logical,
            stored,
            objects,
        });
    }

    println!("\nbackup of pgbench -i -s {scale} (one run each, same cluster)\n");
    println!(
        "{:<14} {:>9} {:>12} {:>10} {:>12} {:>9} {:>11}",
        "store", "wall s", "logical", "MB/s", "stored", "objects", "objects/GB"
    );
    for r in &rows {
        let gb = r.logical as f64 / 1e9;
        println!(
            "{:<14} {:>9.2} {:>12} {:>10.1} {:>12} {:>9} {:>11.0}",
            r.store,
            r.wall,
            human(r.logical),
            r.logical as f64 / 1e6 / r.wall.max(1e-9),
            human(r.stored),
            r.objects,
            r.objects as f64 / gb.max(1e-9)
        );
    }
    if let [f, s] = &rows[..] {
        println!("\nwall ratio s3/file: {:.2}", s.wall / f.wall.max(1e-9));
    }
    Ok(())
}
