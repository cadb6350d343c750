//! Retention: which backups and which WAL a policy keeps ([`plan_retention`],
//! a pure function), and deleting the rest ([`Repository::apply_retention`]).
//!
//! Rules: the newest backup is never deleted; WAL is kept from the start LSN
//! of the oldest kept backup onward on every timeline, so every kept backup
//! can be rolled forward to the newest archived WAL and every point between
//! the oldest kept backup's end and that WAL stays reachable; timeline
//! history files are always kept. Older segments, partials and gap records
//! are deleted. Packs are left to garbage collection (`repo gc`).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use hs_base::code;
use serde::Serialize;

use hs_pg::Lsn;

use crate::error::{Error, Result};
use crate::lock::{LeaseKind, LeaseOptions};
use crate::manifest::BackupManifest;
use crate::repo::{check_deployment, Repository};
use crate::wal::{parse_wal_segment_name, segs_per_xlogid, WalListing, DEFAULT_WAL_SEGMENT_SIZE};

/// How many backups to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetentionPolicy {
    /// The newest N backups (at least one).
    Count(usize),
    /// Every backup that ended inside the window `[now - d, now]`, plus the
    /// newest one that ended before it (so PITR to the window start works).
    Within(Duration),
    /// Grandfather-father-son: the newest backup of each of the last
    /// `daily` days, `weekly` ISO weeks and `monthly` months that have backups.
    Gfs {
        /// Days to keep one backup for.
        daily: u32,
        /// ISO weeks to keep one backup for.
        weekly: u32,
        /// Calendar months to keep one backup for.
        monthly: u32,
    },
}

/// What retention needs to know about one backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupPoint {
    /// The backup id.
    pub backup_id: String,
    /// Timeline the backup ended on.
    pub timeline: u32,
    /// Start LSN.
    pub start_lsn: u64,
    /// Stop LSN.
    pub stop_lsn: u64,
    /// Start time, Unix seconds.
    pub start_time: i64,
    /// Stop time, Unix seconds.
    pub stop_time: i64,
    /// Bytes the backup added to the repository when it was written.
    pub stored_bytes: u64,
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl BackupPoint {
    /// The retention view of a manifest (`verify.manifest_invalid` if its
    /// times do not parse; its LSNs are typed).
    pub fn from_manifest(m: &BackupManifest) -> Result<BackupPoint> {
        let bad = |what: &str| {
            Error::new(
                code::VERIFY_MANIFEST_INVALID,
                format!("backup {} has an invalid {what}", m.backup_id),
            )
        };
        Ok(BackupPoint {
            backup_id: m.backup_id.clone(),
            timeline: m.timeline,
            start_lsn: m.start_lsn.0,
            stop_lsn: m.stop_lsn.0,
            start_time: parse_time(&m.start_time).ok_or_else(|| bad("start time"))?,
            stop_time: parse_time(&m.stop_time).ok_or_else(|| bad("stop time"))?,
            stored_bytes: m.stats.stored_bytes,
        })
    }
}

/// The decision for one backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupDecision {
    /// The backup.
    pub backup: BackupPoint,
    /// Kept or deleted.
    pub keep: bool,
    /// Why (every rule that keeps it, or why it goes).
    pub reasons: Vec<String>,
}

/// What a policy keeps and deletes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// One decision per backup, newest first.
    pub backups: Vec<BackupDecision>,
    /// WAL segment size the plan assumed.
    pub wal_segment_size: u64,
    /// First segment number kept (on every timeline); `None`: all WAL kept.
    pub wal_keep_from_segno: Option<u64>,
    /// Completed segments to delete (names).
    pub wal_segments: Vec<String>,
    /// Partial segments to delete (segment names, without `.partial`).
    pub wal_partials: Vec<String>,
    /// Gap records to delete, as (from, to).
    pub wal_gaps: Vec<(String, String)>,
    /// Stored bytes of the WAL objects to delete.
    pub wal_bytes: u64,
}

impl RetentionPlan {
    /// The backups kept, newest first.
    pub fn kept(&self) -> impl Iterator<Item = &BackupPoint> {
        self.backups.iter().filter(|d| d.keep).map(|d| &d.backup)
    }

    /// The backups deleted, newest first.
    pub fn deleted(&self) -> impl Iterator<Item = &BackupPoint> {
        self.backups.iter().filter(|d| !d.keep).map(|d| &d.backup)
    }

    /// Whether the plan deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.deleted().next().is_none()
            && self.wal_segments.is_empty()
            && self.wal_partials.is_empty()
            && self.wal_gaps.is_empty()
    }
}

fn segno_of(name: &str, seg_size: u64) -> Option<u64> {
    let (_, log, seg) = parse_wal_segment_name(name)?;
    Some(u64::from(log) * segs_per_xlogid(seg_size) + u64::from(seg))
}

/// Which backups `policy` keeps at `now` (Unix seconds) and which WAL can go.
/// `seg_size` is the deployment's WAL segment size (0 means 16 MiB).
pub fn plan_retention(
    backups: &[BackupPoint],
    wal: &WalListing,
    seg_size: u64,
    policy: &RetentionPolicy,
    now: i64,
) -> RetentionPlan {
    let seg_size = if seg_size == 0 {
        DEFAULT_WAL_SEGMENT_SIZE
    } else {
        seg_size
    };
    let mut order: Vec<&BackupPoint> = backups.iter().collect();
    // Newest first.
    order.sort_by(|a, b| {
        (b.start_time, b.start_lsn, &b.backup_id).cmp(&(a.start_time, a.start_lsn, &a.backup_id))
    });
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); order.len()];
    if let Some(r) = reasons.first_mut() {
        r.push("newest backup".to_string());
    }
    match policy {
        RetentionPolicy::Count(n) => {
            for r in reasons.iter_mut().take((*n).max(1)) {
                r.push(format!("one of the newest {n}"));
            }
        }
        RetentionPolicy::Within(d) => {
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4);
            let start = now.saturating_sub(secs);
            let mut anchor = false;
            for (b, r) in order.iter().zip(reasons.iter_mut()) {
                if b.stop_time > start {
                    r.push("ended inside the window".to_string());
                } else if !anchor {
                    anchor = true;
                    r.push("newest before the window start (PITR to the window start)".to_string());
                }
            }
        }
        RetentionPolicy::Gfs {
            daily,
            weekly,
            monthly,
        } => {
            type Key = fn(i64) -> (i64, i64);
            let rules: [(u32, &str, Key); 3] = [
                (*daily, "day", |t| (t.div_euclid(86_400), 0)),
                (*weekly, "week", |t| {
                    let d = time::OffsetDateTime::from_unix_timestamp(t)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                    let (y, w, _) = d.to_iso_week_date();
                    (i64::from(y), i64::from(w))
                }),
                (*monthly, "month", |t| {
                    let d = time::OffsetDateTime::from_unix_timestamp(t)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                    (i64::from(d.year()), i64::from(u8::from(d.month())))
                }),
            ];
            for (n, unit, key) in rules {
                let mut seen = HashSet::new();
                for (b, r) in order.iter().zip(reasons.iter_mut()) {
                    if seen.len() >= n as usize {
                        break;
                    }
                    if seen.insert(key(b.start_time)) {
                        r.push(format!("newest of its {unit}"));
                    }
                }
            }
        }
    }
    bridge_wal_holes(&order, &mut reasons, wal, seg_size);
    let mut plan = RetentionPlan {
        wal_segment_size: seg_size,
        ..RetentionPlan::default()
    };
    for (b, r) in order.iter().zip(reasons) {
        let keep = !r.is_empty();
        plan.backups.push(BackupDecision {
            backup: (*b).clone(),
            keep,
            reasons: if keep {
                r
            } else {
                vec!["not kept by the policy".to_string()]
            },
        });
    }
    plan.wal_keep_from_segno = plan.kept().map(|b| b.start_lsn / seg_size).min();
    if let Some(from) = plan.wal_keep_from_segno {
        for s in &wal.segments {
            if s.segno(seg_size) < from {
                plan.wal_segments.push(s.name.clone());
                plan.wal_bytes += s.stored_bytes;
            }
        }
        for s in &wal.partials {
            if s.segno(seg_size) < from {
                plan.wal_partials.push(s.name.clone());
                plan.wal_bytes += s.stored_bytes;
            }
        }
        for g in &wal.gaps {
            if segno_of(&g.to_segment, seg_size).is_some_and(|t| t < from) {
                plan.wal_gaps
                    .push((g.from_segment.clone(), g.to_segment.clone()));
            }
        }
    }
    plan
}

/// PITR across a hole in the archived WAL needs a backup that ends after
/// the hole: for every hole above the oldest kept backup's start, keep the
/// oldest backup that ends after it. Repeats until nothing changes (a newly
/// kept backup never lowers the start, but the loop costs little).
fn bridge_wal_holes(
    order: &[&BackupPoint],
    reasons: &mut [Vec<String>],
    wal: &WalListing,
    seg_size: u64,
) {
    let present: BTreeSet<u64> = wal.segments.iter().map(|s| s.segno(seg_size)).collect();
    loop {
        let Some(from) = order
            .iter()
            .zip(reasons.iter())
            .filter(|(_, r)| !r.is_empty())
            .map(|(b, _)| b.start_lsn / seg_size)
            .min()
        else {
            return;
        };
        let mut holes = Vec::new();
        let mut expect = from;
        for &s in present.range(from..) {
            if s > expect {
                holes.push((expect, s - 1));
            }
            expect = s + 1;
        }
        let mut added = false;
        for (h0, h1) in holes {
            let first_after = order
                .iter()
                .enumerate()
                .filter(|(_, b)| b.stop_lsn / seg_size > h1)
                .min_by_key(|(_, b)| (b.stop_lsn, b.start_time));
            if let Some((i, _)) = first_after {
                if reasons[i].is_empty() {
                    reasons[i].push(format!(
                        "oldest backup after the WAL hole {}..{} (PITR across it)",
                        Lsn(h0 * seg_size),
                        Lsn((h1 + 1) * seg_size)
                    ));
                    added = true;
                }
            }
        }
        if !added {
            return;
        }
    }
}

/// What [`Repository::apply_retention`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionApplied {
    /// Manifests deleted.
    pub backups: usize,
    /// WAL objects deleted (segments, their summaries, partials, gaps).
    pub wal_objects: usize,
}

impl Repository {
    /// Loads the deployment's backups and WAL listing and plans `policy` at
    /// `now` (Unix seconds). The WAL segment size is read from a stored segment.
    pub async fn plan_retention(
        &self,
        deployment: &str,
        policy: &RetentionPolicy,
        now: i64,
    ) -> Result<RetentionPlan> {
        check_deployment(deployment)?;
        let backups = self
            .list_backup_summaries(deployment)
            .await?
            .iter()
            .map(BackupPoint::from_manifest)
            .collect::<Result<Vec<_>>>()?;
        let wal = self.list_wal(deployment).await?;
        let seg_size = match wal.segments.last() {
            Some(s) => self.get_wal(deployment, &s.name).await?.len() as u64,
            None => DEFAULT_WAL_SEGMENT_SIZE,
        };
        Ok(plan_retention(&backups, &wal, seg_size, policy, now))
    }

    /// Deletes what `plan` deletes, manifests first, then WAL (segments with
    /// their summaries, partials, gap records); packs are left to `repo gc`.
    /// Holds an exclusive lease while it runs (`conflict.repo_locked` if
    /// another maintenance run holds one). Refuses a plan that would delete
    /// every backup.
    pub async fn apply_retention(
        &self,
        deployment: &str,
        plan: &RetentionPlan,
    ) -> Result<RetentionApplied> {
        check_deployment(deployment)?;
        if !plan.backups.is_empty() && plan.kept().next().is_none() {
            return Err(Error::new(
                code::USAGE_RETENTION_DELETES_EVERYTHING,
                "the retention plan deletes every backup",
            )
            .with_suggestion("the newest backup is always kept; plan again with plan_retention"));
        }
        let lease = self
            .acquire_lease(
                LeaseKind::Exclusive,
                &format!("rotate {deployment}"),
                &LeaseOptions::announce(),
            )
            .await?;
        let res = self.apply_retention_inner(deployment, plan).await;
        lease.release().await?;
        res
    }

    async fn apply_retention_inner(
        &self,
        deployment: &str,
        plan: &RetentionPlan,
    ) -> Result<RetentionApplied> {
        let b = &self.inner.backend;
        let mut done = RetentionApplied::default();
        for d in plan.deleted() {
            b.delete(&format!("deployments/{deployment}/backups/{}", d.backup_id))
                .await?;
            done.backups += 1;
        }
        let wal = format!("deployments/{deployment}/wal/");
        let summaries: BTreeSet<String> = b
            .list(&format!("{wal}summaries/"))
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        for s in &plan.wal_segments {
            if parse_wal_segment_name(s).is_none() {
                continue;
            }
            b.delete(&format!("{wal}{}/{s}", &s[..8])).await?;
            let summary = format!("{wal}summaries/{s}");
            if summaries.contains(&summary) {
                b.delete(&summary).await?;
                done.wal_objects += 1;
            }
            done.wal_objects += 1;
        }
        for s in &plan.wal_partials {
            if parse_wal_segment_name(s).is_none() {
                continue;
            }
            b.delete(&format!("{wal}{}/{s}.partial", &s[..8])).await?;
            done.wal_objects += 1;
        }
        for (from, to) in &plan.wal_gaps {
            if parse_wal_segment_name(from).is_none() || parse_wal_segment_name(to).is_none() {
                continue;
            }
            b.delete(&format!("{wal}gaps/{from}-{to}")).await?;
            done.wal_objects += 1;
        }
        Ok(done)
    }
}
