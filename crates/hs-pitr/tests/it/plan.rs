//! `plan_restore` against a real repository with synthetic WAL: backup
//! choice, gaps, unreachable targets and targets before every backup.

use hs_pg::Lsn;
use hs_pitr::{plan_restore, BackupSelector, PitrTarget};
use hs_repo::BackupManifest;
use time::macros::datetime;

use crate::support::{segment, Env, D};

const MIB: u64 = 1 << 20;

fn name(segno: u64) -> String {
    hs_repo::wal_segment_name(1, segno, MIB)
}

fn manifest(id: &str, stop_lsn: &str, stop_time: &str) -> BackupManifest {
    crate::support::manifest(id, stop_lsn, stop_time, "plan test")
}

/// Backups A (ends in segment 1, 03:00) and B (segment 3, 03:10); WAL
/// segments 1-4 and 6-7 (5 is missing).
async fn setup() -> Env {
    let env = Env::new().await;
    env.repo
        .put_manifest(&manifest("A", "0/100100", "2026-11-26T03:00:00Z"))
        .await
        .unwrap();
    env.repo
        .put_manifest(&manifest("B", "0/300100", "2026-11-26T03:10:00Z"))
        .await
        .unwrap();
    for s in [1u64, 2, 3, 4, 6, 7] {
        env.repo
            .put_wal_segment(D, &name(s), &segment(s, MIB as usize))
            .await
            .unwrap();
    }
    env
}

async fn code(env: &Env, sel: &BackupSelector, t: PitrTarget) -> String {
    plan_restore(&env.repo, D, sel, &t)
        .await
        .unwrap_err()
        .code()
        .to_owned()
}

#[tokio::test]
async fn lsn_targets_choose_the_backup_and_check_wal() {
    let env = setup().await;
    let latest = BackupSelector::Latest;
    let p = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0x48_0000)))
        .await
        .unwrap();
    assert_eq!(p.backup.backup_id, "B");
    assert_eq!(p.wal_segment_size, MIB);
    assert_eq!(p.wal_from.as_deref(), Some(name(3).as_str()));
    assert_eq!(p.wal_to.as_deref(), Some(name(4).as_str()));
    assert_eq!(p.wal_segments, 2);
    assert_eq!(p.resolved_lsn, Some(Lsn(0x48_0000)));

    // Before B's end: the older backup A serves it.
    let p = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0x25_0000)))
        .await
        .unwrap();
    assert_eq!(p.backup.backup_id, "A");
    assert_eq!(p.wal_from.as_deref(), Some(name(1).as_str()));
    assert_eq!(p.wal_to.as_deref(), Some(name(2).as_str()));
    // ... but not when B is asked for explicitly.
    let b = BackupSelector::Id("B".into());
    assert_eq!(
        code(&env, &b, PitrTarget::Lsn(Lsn(0x25_0000))).await,
        "conflict.target_before_backup"
    );
    assert_eq!(
        code(&env, &latest, PitrTarget::Lsn(Lsn(0x5_0000))).await,
        "conflict.target_before_backup"
    );

    // In the missing segment 5, or past it.
    let e = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0x58_0000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict.target_in_wal_gap");
    assert!(e.to_string().contains(&name(5)), "{e}");
    assert!(e.suggestion().is_some());
    assert_eq!(
        code(&env, &latest, PitrTarget::Lsn(Lsn(0x68_0000))).await,
        "conflict.target_in_wal_gap"
    );
    let e = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0xFF0_0000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict.target_unreachable");
    assert!(e.to_string().contains(&name(7)), "{e}");

    // Latest: the gap after B is reported, not skipped silently.
    assert_eq!(
        code(&env, &latest, PitrTarget::Latest).await,
        "conflict.target_in_wal_gap"
    );
}

#[tokio::test]
async fn time_and_name_targets_scan_wal() {
    let env = setup().await;
    let latest = BackupSelector::Latest;
    assert_eq!(
        code(
            &env,
            &latest,
            PitrTarget::Time(datetime!(2026-11-26 02:00 UTC))
        )
        .await,
        "conflict.target_before_backup"
    );
    // The synthetic WAL has no commits: the scan runs into the gap.
    assert_eq!(
        code(
            &env,
            &latest,
            PitrTarget::Time(datetime!(2026-11-26 03:05 UTC))
        )
        .await,
        "conflict.target_in_wal_gap"
    );
    assert_eq!(
        code(&env, &latest, PitrTarget::Name("nope".into())).await,
        "conflict.target_in_wal_gap"
    );
    // Summaries of the scanned complete segments were stored, and are used.
    for s in [1u64, 2, 3, 4] {
        assert!(
            env.repo
                .get_wal_summary(D, &name(s))
                .await
                .unwrap()
                .is_some(),
            "segment {s}"
        );
    }
    assert_eq!(
        code(&env, &latest, PitrTarget::Name("nope".into())).await,
        "conflict.target_in_wal_gap"
    );
    // Summaries are not WAL segments.
    let listing = env.repo.list_wal(D).await.unwrap();
    assert_eq!(listing.segments.len(), 6);
    assert!(listing.partials.is_empty());

    // Without the gap, the end of the archive is "unreachable".
    env.repo
        .put_wal_segment(D, &name(5), &segment(5, MIB as usize))
        .await
        .unwrap();
    let e = plan_restore(
        &env.repo,
        D,
        &latest,
        &PitrTarget::Time(datetime!(2026-11-26 03:05 UTC)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "conflict.target_unreachable", "{e}");
    assert!(e.to_string().contains(&name(7)), "{e}");
    let p = plan_restore(&env.repo, D, &latest, &PitrTarget::Latest)
        .await
        .unwrap();
    assert_eq!(p.backup.backup_id, "B");
    assert_eq!(p.wal_to.as_deref(), Some(name(7).as_str()));
}

#[tokio::test]
async fn no_backups_is_notfound() {
    let env = Env::new().await;
    assert_eq!(
        code(&env, &BackupSelector::Latest, PitrTarget::Latest).await,
        "notfound.backup"
    );
}

/// Microseconds since 2000-01-01 UTC (PostgreSQL's epoch), as WAL summaries hold times.
fn pg_micros(t: time::OffsetDateTime) -> i64 {
    let unix = (t.unix_timestamp_nanos() / 1000) as i64;
    unix - hs_pg::pg_time_to_unix_micros(0)
}

/// Stores the summary planning keeps of complete segment `segno` (the text form
/// plan.rs writes: `hs-wal-summary 1`, its end of valid WAL, its newest commit time and
/// its restore points as `rp <start> <end> <time> <hex name>`), so that planning reads
/// it instead of decoding the synthetic segment (which holds no commits).
async fn put_summary(
    env: &Env,
    segno: u64,
    max_commit: time::OffsetDateTime,
    restore_point: Option<(&str, u64, time::OffsetDateTime)>,
) {
    let mut text = format!(
        "hs-wal-summary 1\nend {:x}\nmax {}\n",
        (segno + 1) * MIB,
        pg_micros(max_commit)
    );
    if let Some((rp, start, at)) = restore_point {
        let hex: String = rp.bytes().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!(
            "rp {start:x} {:x} {} {hex}\n",
            start + 0x100,
            pg_micros(at)
        ));
    }
    env.repo
        .put_wal_summary(D, &name(segno), text.as_bytes())
        .await
        .unwrap();
}

/// Two overlapping backups of one deployment: B1 starts first (segment 1, 03:00) but
/// stops last (segment 5, 03:30); B2 starts later (segment 2, 03:05) and stops first
/// (segment 3, 03:10). WAL segments 1-7 are archived, with commits up to 03:02, 03:06,
/// 03:12, 03:20, 03:31, 03:40 and 03:50, restore point "early" in segment 2 (before
/// either backup is consistent) and "mid" in segment 4 (after B2's end, before B1's).
async fn overlapping() -> Env {
    let env = Env::new().await;
    for (id, start_lsn, start_time, stop_lsn, stop_time) in [
        (
            B1,
            "0/100100",
            "2026-11-26T03:00:00Z",
            "0/500100",
            "2026-11-26T03:30:00Z",
        ),
        (
            B2,
            "0/200100",
            "2026-11-26T03:05:00Z",
            "0/300100",
            "2026-11-26T03:10:00Z",
        ),
    ] {
        let m = BackupManifest {
            start_lsn: start_lsn.parse().unwrap(),
            start_time: start_time.into(),
            ..manifest(id, stop_lsn, stop_time)
        };
        env.repo.put_manifest(&m).await.unwrap();
    }
    let commits = [
        datetime!(2026-11-26 03:02 UTC),
        datetime!(2026-11-26 03:06 UTC),
        datetime!(2026-11-26 03:12 UTC),
        datetime!(2026-11-26 03:20 UTC),
        datetime!(2026-11-26 03:31 UTC),
        datetime!(2026-11-26 03:40 UTC),
        datetime!(2026-11-26 03:50 UTC),
    ];
    for (s, max_commit) in (1u64..=7).zip(commits) {
        env.repo
            .put_wal_segment(D, &name(s), &segment(s, MIB as usize))
            .await
            .unwrap();
        let rp = match s {
            2 => Some(("early", 0x20_0200, datetime!(2026-11-26 03:06 UTC))),
            4 => Some(("mid", 0x40_0200, datetime!(2026-11-26 03:18 UTC))),
            _ => None,
        };
        put_summary(&env, s, max_commit, rp).await;
    }
    env
}

const B1: &str = "20261126T030000Z";
const B2: &str = "20261126T030500Z";

/// Plans `target` with `latest` and checks that the backup chosen is consistent
/// before it (its stop LSN at or before the LSN recovery stops at); returns its id.
async fn chosen(env: &Env, target: PitrTarget) -> String {
    let p = plan_restore(&env.repo, D, &BackupSelector::Latest, &target)
        .await
        .unwrap_or_else(|e| panic!("{target}: {}: {e}", e.code()));
    let stop = p.backup.stop_lsn;
    if let Some(l) = p.resolved_lsn {
        assert!(
            stop <= l,
            "{target}: backup {} ends at {stop}, after {l}",
            p.backup.backup_id
        );
    }
    if let Some(t) = p.resolved_time {
        let ends = time::OffsetDateTime::parse(
            &p.backup.stop_time,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            ends < t,
            "{target}: backup {} ends at {ends}",
            p.backup.backup_id
        );
    }
    // Recovery reads WAL from the chosen backup's end, never from before it.
    if let Some(from) = &p.wal_from {
        assert!(*from >= name(stop.0 / MIB), "{target}: WAL from {from}");
    }
    p.backup.backup_id
}

#[tokio::test]
async fn overlapping_backups_never_serve_a_target_before_their_end() {
    let env = overlapping().await;
    let lsn = |l: u64| PitrTarget::Lsn(Lsn(l));
    let at = PitrTarget::Time;

    // Between B2's end and B1's: only B2 is consistent before the target, although
    // B1 (started first) is still running there.
    assert_eq!(chosen(&env, lsn(0x48_0000)).await, B2);
    assert_eq!(chosen(&env, lsn(0x30_0100)).await, B2, "exactly B2's end");
    assert_eq!(
        chosen(&env, lsn(0x50_00ff)).await,
        B2,
        "just before B1's end"
    );
    assert_eq!(chosen(&env, at(datetime!(2026-11-26 03:20 UTC))).await, B2);
    assert_eq!(chosen(&env, PitrTarget::Name("mid".into())).await, B2);

    // After both ends both are consistent; the newest (by start, as backup ids
    // sort) is chosen.
    assert_eq!(chosen(&env, lsn(0x68_0000)).await, B2);
    assert_eq!(chosen(&env, at(datetime!(2026-11-26 03:45 UTC))).await, B2);
    assert_eq!(chosen(&env, PitrTarget::Latest).await, B2);

    // Before both ends (after both starts): no backup serves it, B1 included.
    for t in [
        lsn(0x25_0000),
        lsn(0x30_00ff),
        at(datetime!(2026-11-26 03:08 UTC)),
    ] {
        assert_eq!(
            code(&env, &BackupSelector::Latest, t).await,
            "conflict.target_before_backup"
        );
    }
    // A restore point before both ends is not reachable from either backup's end.
    assert_eq!(
        code(
            &env,
            &BackupSelector::Latest,
            PitrTarget::Name("early".into())
        )
        .await,
        "conflict.target_unreachable"
    );
    // Asked for explicitly, B1 refuses a target before its end even though B2 ends
    // before it.
    assert_eq!(
        code(&env, &BackupSelector::Id(B1.into()), lsn(0x48_0000)).await,
        "conflict.target_before_backup"
    );
}
