//! The WAL segment decoder against real PostgreSQL WAL (15 by default; `cargo xtask
//! integration` runs it on each major): commits, an abort, a restore point
//! and multi-page records, compared with `pg_waldump` per segment and with the test's clock.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use hs_proto::{
    decode_segment, pg_time_to_unix_micros, Lsn, SegmentDecoder, SegmentEnd, SegmentName,
    SegmentSummary, TimelineId, DEFAULT_WAL_SEGMENT_SIZE,
};
use hs_testkit::{PgCluster, PgOptions};

use crate::support::R;

const SEG: u64 = DEFAULT_WAL_SEGMENT_SIZE;

fn unix_micros() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_micros()).expect("fits")
}

/// Per-segment counts from `pg_waldump` output, keyed by segment number.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    records: u64,
    commits: u64,
    aborts: u64,
}

struct Dump {
    per_segment: BTreeMap<u64, Counts>,
    restore_points: Vec<(String, Lsn)>,
    max_tot_len: u64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.trim_start().split([',', ' ']).next().unwrap_or(""))
}

fn pg_waldump(
    wal_dir: &std::path::Path,
    first: &str,
    last: &str,
) -> Result<Dump, Box<dyn std::error::Error>> {
    let out = Command::new(hs_testkit::pg_bin("pg_waldump"))
        .arg("-p")
        .arg(wal_dir)
        .arg(first)
        .arg(last)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut dump = Dump {
        per_segment: BTreeMap::new(),
        restore_points: Vec::new(),
        max_tot_len: 0,
    };
    for line in text.lines().filter(|l| l.starts_with("rmgr:")) {
        let lsn: Lsn = field(line, "lsn:").ok_or("no lsn")?.parse()?;
        let rmgr = field(line, "rmgr:").ok_or("no rmgr")?;
        let desc = line.split("desc: ").nth(1).unwrap_or("");
        // "len (rec/tot):     34/    34"
        let tot: u64 = line
            .split("len (rec/tot):")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|r| r.split('/').nth(1))
            .map(str::trim)
            .ok_or("no len")?
            .parse()?;
        dump.max_tot_len = dump.max_tot_len.max(tot);
        let c = dump.per_segment.entry(lsn.0 / SEG).or_default();
        c.records += 1;
        if rmgr == "Transaction" && desc.starts_with("COMMIT") {
            c.commits += 1;
        }
        if rmgr == "Transaction" && desc.starts_with("ABORT") {
            c.aborts += 1;
        }
        if rmgr == "XLOG" && desc.starts_with("RESTORE_POINT") {
            let name = desc.trim_start_matches("RESTORE_POINT").trim().to_string();
            dump.restore_points.push((name, lsn));
        }
    }
    assert!(
        !dump.per_segment.is_empty(),
        "pg_waldump printed no records: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dump)
}

#[test]
fn decoder_agrees_with_pg_waldump() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let major = pg.major()?;
    pg.psql("CREATE TABLE t (id int, v text)")?;
    // Start from a fresh segment so every commit decoded below happens inside our window.
    let t0 = unix_micros();
    pg.psql("SELECT pg_switch_wal()")?;
    let first_lsn: Lsn = pg.psql("SELECT pg_current_wal_insert_lsn()")?.parse()?;
    for i in 0..25 {
        pg.psql(&format!("INSERT INTO t VALUES ({i}, 'row {i}')"))?;
    }
    pg.psql("BEGIN; INSERT INTO t VALUES (-1, 'rolled back'); ROLLBACK")?;
    // A ~22 kB incompressible value (TOASTed into records that cross pages) and a 20 kB
    // logical message: one record spanning three WAL pages.
    pg.psql(
        "INSERT INTO t SELECT 100, string_agg(md5(i::text), '') FROM generate_series(1, 700) i",
    )?;
    pg.psql("SELECT pg_logical_emit_message(false, 'hs', repeat('z', 20000))")?;
    let rp_end: Lsn = pg
        .psql("SELECT pg_create_restore_point('before_x')")?
        .parse()?;
    for i in 0..10 {
        pg.psql(&format!("UPDATE t SET v = 'upd {i}' WHERE id = {i}"))?;
    }
    // Fill more than a segment so that records cross segment boundaries too.
    pg.psql("INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 120000) g")?;
    pg.psql("INSERT INTO t VALUES (200, 'last')")?;
    let t1 = unix_micros();
    let last_lsn: Lsn = pg.psql("SELECT pg_current_wal_insert_lsn()")?.parse()?;
    pg.psql("SELECT pg_switch_wal()")?;

    let wal_dir = pg.data_dir().join("pg_wal");
    let first = SegmentName::from_lsn(TimelineId(1), first_lsn, SEG)?;
    let last = SegmentName::from_lsn(TimelineId(1), last_lsn, SEG)?;
    assert!(
        last.segno() > first.segno(),
        "test WAL spans several segments"
    );
    let mut segments = Vec::new();
    let mut n = first;
    loop {
        segments.push((n, std::fs::read(wal_dir.join(n.to_string()))?));
        if n == last {
            break;
        }
        n = n.next();
    }

    // Consecutive decoding, fed in uneven pieces.
    let mut dec = SegmentDecoder::new(first);
    let mut sums: Vec<SegmentSummary> = Vec::new();
    let mut piece = 1usize;
    for (_, bytes) in &segments {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            piece = (piece * 7919 + 13) % 100_003 + 1;
            let k = piece.min(rest.len());
            dec.push(&rest[..k])?;
            rest = &rest[k..];
            sums.extend(std::iter::from_fn(|| dec.next_summary()));
        }
    }
    sums.extend(dec.finish());
    assert_eq!(sums.len(), segments.len());

    let dump = pg_waldump(&wal_dir, &first.to_string(), &last.to_string())?;
    assert!(
        dump.max_tot_len >= 20_000,
        "a record larger than two WAL pages was written"
    );
    for s in &sums {
        eprintln!(
            "{}: {} records, {} commits, {} aborts, first {:?}, end {} ({:?})",
            s.segment,
            s.records,
            s.commits,
            s.aborts,
            s.first_record_lsn,
            s.end_of_valid_wal,
            s.end
        );
        // The page magic names the server's major (HS_PG_MAJOR selects it in the matrix).
        assert_eq!(s.pg_major, Some(major), "segment {}", s.segment);
        let want = dump.per_segment.get(&s.segment.segno());
        let got = Counts {
            records: s.records,
            commits: s.commits,
            aborts: s.aborts,
        };
        assert_eq!(Some(&got), want, "segment {}", s.segment);
        if s.segment == last {
            assert_eq!(s.end, SegmentEnd::Switch);
        } else {
            assert_eq!(s.end, SegmentEnd::Complete, "segment {}", s.segment);
        }
        if let (Some(lo), Some(hi)) = (s.min_commit_time, s.max_commit_time) {
            let (lo, hi) = (pg_time_to_unix_micros(lo), pg_time_to_unix_micros(hi));
            assert!(
                t0 <= lo && hi <= t1,
                "commit times {lo}..{hi} outside {t0}..{t1}"
            );
        }
    }
    let total_commits: u64 = sums.iter().map(|s| s.commits).sum();
    assert!(total_commits >= 38, "{total_commits} commits");
    assert!(sums.iter().map(|s| s.aborts).sum::<u64>() >= 1);

    // The restore point: name, end LSN as pg_create_restore_point returned, start as pg_waldump.
    let rps: Vec<_> = sums.iter().flat_map(|s| s.restore_points.clone()).collect();
    assert_eq!(rps.len(), 1, "{rps:?}");
    assert_eq!(rps[0].name, "before_x");
    assert_eq!(rps[0].lsn, rp_end);
    assert_eq!(
        dump.restore_points,
        vec![("before_x".to_string(), rps[0].start_lsn)]
    );
    let rp_unix = pg_time_to_unix_micros(rps[0].time);
    assert!(t0 <= rp_unix && rp_unix <= t1);

    // Each segment on its own: the same, except records crossing into the next segment are
    // cut off (and skipped at the head of the next).
    for (i, (name, bytes)) in segments.iter().enumerate() {
        let alone = decode_segment(*name, bytes)?;
        let joint = &sums[i];
        assert_eq!(alone.first_record_lsn, joint.first_record_lsn);
        match alone.end {
            SegmentEnd::Truncated {
                incomplete_record: Some(at),
            } => {
                eprintln!("{name} alone: record at {at} continues into the next segment");
                assert!(name.contains(at));
                assert_eq!(alone.records + 1, joint.records, "segment {name}");
            }
            ref e => {
                assert_eq!(e, &joint.end);
                assert_eq!(alone.records, joint.records);
                assert_eq!(alone.commits, joint.commits);
            }
        }
    }

    // A partial segment (zeroed tail): decoding stops at the first zeroed record header.
    let (name, bytes) = &segments[0];
    let cut = (rp_end.0 - name.start_lsn(SEG).0) as usize;
    if name.contains(rp_end) {
        let mut partial = bytes[..cut].to_vec();
        partial.resize(SEG as usize, 0);
        let s = decode_segment(*name, &partial)?;
        assert_eq!(s.end_of_valid_wal, rp_end);
        assert_eq!(s.restore_points.len(), 1);
        assert!(
            matches!(s.end, SegmentEnd::Invalid { at, .. } if at == rp_end),
            "{:?}",
            s.end
        );
    }
    Ok(())
}
