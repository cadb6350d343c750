//! Retention properties: random histories of backups, WAL (timelines, holes,
//! partials, gap records) and random policies; the plan keeps the newest
//! backup, every kept backup's WAL, every PITR point of the kept window, and
//! a second run deletes nothing more.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use hs_repo::{
    plan_retention, wal_segment_name, BackupPoint, RetentionPlan, RetentionPolicy, WalGap,
    WalListing, WalSegmentInfo,
};
use proptest::prelude::*;

const SEG: u64 = 16 << 20;
const T0: i64 = 1_790_000_000;

#[derive(Clone, Debug)]
struct History {
    backups: Vec<BackupPoint>,
    wal: WalListing,
    now: i64,
}

fn seg_info(tli: u32, segno: u64, stored: u64) -> WalSegmentInfo {
    let name = wal_segment_name(tli, segno, SEG);
    WalSegmentInfo {
        timeline: tli,
        log: u32::from_str_radix(&name[8..16], 16).unwrap(),
        seg: u32::from_str_radix(&name[16..24], 16).unwrap(),
        name,
        stored_bytes: stored,
    }
}

prop_compose! {
    fn history()(
        first in 1u64..300,
        len in 3u64..60,
        switches in prop::collection::vec(any::<u16>(), 0..3),
        holes in prop::collection::vec(any::<u16>(), 0..4),
        starts in prop::collection::btree_set(any::<u16>(), 1..9),
        long in prop::collection::vec(any::<bool>(), 9),
        step in prop_oneof![Just(600i64), Just(3 * 3600), Just(86_400), Just(3 * 86_400), 60i64..(20 * 86_400)],
        later in 0i64..(40 * 86_400),
        old_partial in any::<bool>(),
    ) -> History {
        let last = first + len - 1;
        let switches: BTreeSet<u64> = switches.iter().map(|s| first + 1 + u64::from(*s) % len).collect();
        let tli = |segno: u64| 1 + switches.iter().filter(|w| **w <= segno).count() as u32;
        let holes: BTreeSet<u64> = holes.iter().map(|h| first + u64::from(*h) % len).collect();
        let mut wal = WalListing::default();
        for s in first..=last {
            if holes.contains(&s) {
                continue;
            }
            if switches.contains(&s) {
                // The switch segment exists on the old timeline too.
                wal.segments.push(seg_info(tli(s) - 1, s, 1000 + s));
            }
            wal.segments.push(seg_info(tli(s), s, 1000 + s));
        }
        for h in &holes {
            let name = wal_segment_name(tli(*h), *h, SEG);
            wal.gaps.push(WalGap {
                from_segment: name.clone(),
                to_segment: name,
                reason: "test".into(),
                recorded_at: "2026-01-01T00:00:00Z".into(),
            });
        }
        wal.partials.push(seg_info(tli(last), last + 1, 77));
        if old_partial {
            wal.partials.push(seg_info(1, first, 66));
        }
        wal.histories = (2..=tli(last)).collect();
        let key = |s: &WalSegmentInfo| (s.timeline, s.log, s.seg);
        wal.segments.sort_by_key(key);
        wal.partials.sort_by_key(key);
        let starts: Vec<u64> = starts.iter().map(|s| first + u64::from(*s) % (len + 1)).collect::<BTreeSet<_>>().into_iter().collect();
        let mut backups = Vec::new();
        for (i, s) in starts.iter().enumerate() {
            // Most backups end in their start segment; some in the next one
            // when that does not overlap the next backup.
            let next = starts.get(i + 1).copied().unwrap_or(u64::MAX);
            let stop_seg = if long[i] && s + 1 < next { s + 1 } else { *s };
            let start_time = T0 + (*s as i64) * step;
            backups.push(BackupPoint {
                backup_id: format!("b{i:02}"),
                timeline: tli(stop_seg),
                start_lsn: s * SEG + 0x28,
                stop_lsn: stop_seg * SEG + 0x100,
                start_time,
                stop_time: start_time + 30 + if stop_seg > *s { step / 2 } else { 0 },
                stored_bytes: 100,
            });
        }
        let now = backups.iter().map(|b| b.stop_time).max().unwrap_or(T0) + later;
        History { backups, wal, now }
    }
}

fn policy() -> impl Strategy<Value = RetentionPolicy> {
    prop_oneof![
        (1usize..6).prop_map(RetentionPolicy::Count),
        (0u64..(30 * 86_400)).prop_map(|s| RetentionPolicy::Within(Duration::from_secs(s))),
        (0u32..5, 0u32..4, 0u32..4).prop_map(|(daily, weekly, monthly)| RetentionPolicy::Gfs {
            daily,
            weekly,
            monthly
        }),
    ]
}

/// The repository after `plan` ran: kept backups and the WAL not deleted.
fn after(h: &History, plan: &RetentionPlan) -> History {
    let gone: HashSet<&str> = plan.deleted().map(|b| b.backup_id.as_str()).collect();
    let segs: HashSet<&String> = plan.wal_segments.iter().collect();
    let parts: HashSet<&String> = plan.wal_partials.iter().collect();
    let gaps: HashSet<(&String, &String)> = plan.wal_gaps.iter().map(|(a, b)| (a, b)).collect();
    let mut wal = h.wal.clone();
    wal.segments.retain(|s| !segs.contains(&s.name));
    wal.partials.retain(|s| !parts.contains(&s.name));
    wal.gaps
        .retain(|g| !gaps.contains(&(&g.from_segment, &g.to_segment)));
    History {
        backups: h
            .backups
            .iter()
            .filter(|b| !gone.contains(b.backup_id.as_str()))
            .cloned()
            .collect(),
        wal,
        now: h.now,
    }
}

/// Whether recovery can reach LSN `p`: some backup ends at or before it and
/// the archived WAL from that backup's end to `p` has no hole.
fn reachable(h: &History, p: u64) -> bool {
    let present: HashSet<u64> = h.wal.segments.iter().map(|s| s.segno(SEG)).collect();
    h.backups
        .iter()
        .any(|b| b.stop_lsn <= p && (b.stop_lsn / SEG..=p / SEG).all(|s| present.contains(&s)))
}

fn check(h: &History, policy: &RetentionPolicy) -> Result<(), TestCaseError> {
    let plan = plan_retention(&h.backups, &h.wal, SEG, policy, h.now);
    let kept: Vec<&BackupPoint> = plan.kept().collect();
    prop_assert_eq!(plan.backups.len(), h.backups.len());

    // The newest backup is always kept.
    let newest = h
        .backups
        .iter()
        .max_by_key(|b| (b.start_time, b.start_lsn, b.backup_id.clone()))
        .unwrap();
    prop_assert!(kept.iter().any(|b| b.backup_id == newest.backup_id));

    // The policy's own promises.
    match policy {
        RetentionPolicy::Count(n) => prop_assert!(kept.len() >= (*n).min(h.backups.len())),
        RetentionPolicy::Within(d) => {
            let start = h.now - d.as_secs() as i64;
            for b in &h.backups {
                if b.stop_time > start {
                    prop_assert!(kept.iter().any(|k| k.backup_id == b.backup_id));
                }
            }
            if h.backups.iter().any(|b| b.stop_time <= start) {
                prop_assert!(
                    kept.iter().any(|k| k.stop_time <= start),
                    "no anchor before the window"
                );
            }
        }
        RetentionPolicy::Gfs { daily, .. } => {
            let mut days: Vec<i64> = h
                .backups
                .iter()
                .map(|b| b.start_time.div_euclid(86_400))
                .collect();
            days.sort_unstable();
            days.dedup();
            for day in days.iter().rev().take(*daily as usize) {
                let newest_of_day = h
                    .backups
                    .iter()
                    .filter(|b| b.start_time.div_euclid(86_400) == *day)
                    .max_by_key(|b| (b.start_time, b.start_lsn))
                    .unwrap();
                prop_assert!(kept.iter().any(|k| k.backup_id == newest_of_day.backup_id));
            }
        }
    }

    let a = after(h, &plan);
    // Nothing outside the plan went, history files all stay.
    prop_assert_eq!(&a.wal.histories, &h.wal.histories);

    // Every kept backup keeps all WAL that existed from its start onward.
    for b in &kept {
        for s in &h.wal.segments {
            if s.segno(SEG) >= b.start_lsn / SEG {
                prop_assert!(
                    a.wal.segments.contains(s),
                    "segment {} needed by {} was deleted",
                    s.name,
                    b.backup_id
                );
            }
        }
        for p in &h.wal.partials {
            if p.segno(SEG) >= b.start_lsn / SEG {
                prop_assert!(a.wal.partials.contains(p));
            }
        }
    }

    // Every PITR point of the kept window that was reachable still is.
    let window_start = kept.iter().map(|b| b.stop_lsn).min().unwrap();
    let last = h
        .wal
        .segments
        .iter()
        .map(|s| s.segno(SEG))
        .max()
        .unwrap_or(0);
    let mut points = vec![window_start];
    points.extend(
        (window_start / SEG..=last)
            .map(|s| s * SEG + SEG - 1)
            .filter(|p| *p >= window_start),
    );
    points.extend(kept.iter().map(|b| b.stop_lsn));
    for p in points {
        if reachable(h, p) {
            prop_assert!(reachable(&a, p), "PITR to {p:X} lost; plan {plan:#?}");
        }
    }

    // Running it again deletes nothing more.
    let again = plan_retention(&a.backups, &a.wal, SEG, policy, h.now);
    prop_assert!(again.is_empty(), "second run deletes more: {again:#?}");
    prop_assert_eq!(again.kept().count(), kept.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn retention_keeps_what_pitr_needs(h in history(), p in policy()) {
        check(&h, &p)?;
    }
}

fn point(id: &str, seg: u64, day: i64) -> BackupPoint {
    BackupPoint {
        backup_id: id.into(),
        timeline: 1,
        start_lsn: seg * SEG + 0x28,
        stop_lsn: seg * SEG + 0x100,
        start_time: T0 + day * 86_400,
        stop_time: T0 + day * 86_400 + 60,
        stored_bytes: 10,
    }
}

fn contiguous_wal(from: u64, to: u64) -> WalListing {
    WalListing {
        segments: (from..=to).map(|s| seg_info(1, s, 5)).collect(),
        ..WalListing::default()
    }
}

#[test]
fn count_keeps_newest_and_trims_wal_below_the_oldest_kept_start() {
    let backups = vec![point("a", 2, 0), point("b", 5, 1), point("c", 9, 2)];
    let wal = contiguous_wal(1, 12);
    let plan = plan_retention(
        &backups,
        &wal,
        SEG,
        &RetentionPolicy::Count(2),
        T0 + 10 * 86_400,
    );
    let kept: Vec<&str> = plan.kept().map(|b| b.backup_id.as_str()).collect();
    assert_eq!(kept, ["c", "b"]);
    assert_eq!(plan.deleted().count(), 1);
    assert_eq!(plan.wal_keep_from_segno, Some(5));
    assert_eq!(
        plan.wal_segments,
        (1..5)
            .map(|s| wal_segment_name(1, s, SEG))
            .collect::<Vec<_>>()
    );
    assert_eq!(plan.wal_bytes, 4 * 5);
    assert!(plan.backups[0]
        .reasons
        .iter()
        .any(|r| r.contains("newest backup")));
    // Count 0 still keeps the newest.
    let plan = plan_retention(&backups, &wal, SEG, &RetentionPolicy::Count(0), T0);
    assert_eq!(plan.kept().count(), 1);
    assert_eq!(plan.kept().next().unwrap().backup_id, "c");
}

#[test]
fn within_keeps_the_anchor_before_the_window() {
    let backups = vec![point("a", 2, 0), point("b", 5, 3), point("c", 9, 6)];
    let wal = contiguous_wal(1, 12);
    let now = T0 + 7 * 86_400;
    let plan = plan_retention(
        &backups,
        &wal,
        SEG,
        &RetentionPolicy::Within(Duration::from_secs(2 * 86_400)),
        now,
    );
    let kept: Vec<&str> = plan.kept().map(|b| b.backup_id.as_str()).collect();
    // c is inside the window; b is the newest that ended before it.
    assert_eq!(kept, ["c", "b"]);
    assert!(plan.backups[1].reasons[0].contains("window start"));
}

#[test]
fn a_backup_after_a_wal_hole_is_kept_for_pitr_across_it() {
    let backups = vec![point("a", 2, 0), point("b", 5, 1), point("c", 9, 2)];
    // Segment 4 is missing: from a, PITR cannot cross it; b ends after it.
    let mut wal = contiguous_wal(1, 12);
    wal.segments.retain(|s| s.segno(SEG) != 4);
    let plan = plan_retention(
        &backups,
        &wal,
        SEG,
        &RetentionPolicy::Gfs {
            daily: 0,
            weekly: 0,
            monthly: 1,
        },
        T0 + 3 * 86_400,
    );
    // Only c is kept: the WAL below its start goes, no hole lies above it.
    let kept: Vec<&str> = plan.kept().map(|b| b.backup_id.as_str()).collect();
    assert_eq!(kept, ["c"]);
    let plan = plan_retention(&backups, &wal, SEG, &RetentionPolicy::Count(3), T0);
    assert_eq!(plan.kept().count(), 3);
    // The policy keeps the newest and a (monthly, an older month); from a,
    // PITR cannot cross the hole, so b (the first backup after it) stays too.
    let mut older = backups.clone();
    older[0].start_time -= 40 * 86_400;
    older[0].stop_time -= 40 * 86_400;
    let plan = plan_retention(
        &older,
        &wal,
        SEG,
        &RetentionPolicy::Gfs {
            daily: 1,
            weekly: 0,
            monthly: 2,
        },
        T0 + 3 * 86_400,
    );
    let kept: Vec<&str> = plan.kept().map(|b| b.backup_id.as_str()).collect();
    assert_eq!(kept, ["c", "b", "a"], "{plan:#?}");
    assert!(plan.backups[1].reasons[0].contains("WAL hole"), "{plan:#?}");
}
