//! Restore planning: which backup serves a point-in-time target, which
//! archived WAL segments recovery needs, and whether they are all there,
//! decided before anything is written.
//!
//! Time and restore-point targets are resolved by decoding archived
//! segments with [`hs_pg::decode_segment`] (commit-time ranges and
//! restore points per segment), starting at the chosen backup's end and
//! stopping at the target's segment. What a completed segment holds is
//! kept in the repository as a small sealed summary object
//! ([`Repository::put_wal_summary`], written best-effort: a read-only
//! repository only costs decoding again), so the next plan reads a few
//! hundred bytes per segment instead of the segment.
//!
//! The WAL between a backup's start and end is inside the backup
//! (`pg_wal/`), so the archive must hold the segments from the one holding
//! the backup's stop LSN (or, when that one is not archived, the next one;
//! PostgreSQL switches segments at the end of a backup) up to the target's
//! segment, without gaps.
//!
//! Timelines: the target timeline ([`TimelineChoice`]) is resolved from the
//! archived `.history` files. The path from the backup's timeline to it is a
//! list of legs; a segment number belongs to the newest leg that has begun
//! by it, so the segment holding a switch point is read from the NEW
//! timeline's file, as PostgreSQL does. The gap check and the time and
//! restore-point resolution walk that same path.

use std::collections::HashMap;
use std::str::FromStr;

use hs_base::code;
use hs_pg::{
    decode_segment, parse_timeline_history, pg_time_to_unix_micros, Lsn, RestorePoint, SegmentName,
    TimelineId,
};
use hs_repo::{
    wal_segment_name, BackupManifest, BackupsNewestFirst, Repository, WalListing,
    DEFAULT_WAL_SEGMENT_SIZE,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, ErrorKind, Result};
use crate::listed::{read_listed_segment, wal_segment_size, Stored};
use crate::recovery::RecoveryTarget;
use crate::restore::{select_backup, BackupSelector};
use crate::target::{
    format_recovery_target_time, format_utc, from_unix_micros, unix_micros, PitrTarget,
};

/// The backup a plan restores, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBackup {
    /// Backup id.
    pub backup_id: String,
    /// Timeline the backup was taken on.
    pub timeline: u32,
    /// Backup start LSN.
    pub start_lsn: Lsn,
    /// Backup stop LSN (where it is consistent).
    pub stop_lsn: Lsn,
    /// Start time, RFC 3339 UTC.
    pub start_time: String,
    /// Stop time, RFC 3339 UTC.
    pub stop_time: String,
}

/// Which timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimelineChoice {
    /// The highest archived timeline whose history descends from the
    /// backup's timeline after the backup's end (the backup's own when none).
    #[default]
    Latest,
    /// The backup's own timeline.
    Current,
    /// This timeline; its history must contain the backup's timeline,
    /// switching away after the backup's end.
    Id(u32),
}

impl FromStr for TimelineChoice {
    type Err = Error;

    /// Parses `latest`, `current` or a timeline number above 0
    /// (`usage.timeline_invalid` otherwise).
    fn from_str(v: &str) -> Result<TimelineChoice> {
        match v {
            "latest" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => Ok(TimelineChoice::Id(n)),
                _ => Err(Error::of_kind(
                    ErrorKind::Usage,
                    code::USAGE_TIMELINE_INVALID,
                    format!("timeline {v:?} is not `latest`, `current` or a timeline number"),
                )
                .with_suggestion("pass latest, current, or a number such as 2")),
            },
        }
    }
}

/// One timeline switch on a plan's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSwitch {
    /// The timeline that ends.
    pub from: u32,
    /// The timeline that begins.
    pub to: u32,
    /// The first LSN of `to`.
    pub lsn: Lsn,
}

/// What a restore to a target will do, decided before writing anything.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// Deployment.
    pub deployment: String,
    /// The backup chosen.
    pub backup: PlannedBackup,
    /// The target as asked.
    pub target: PitrTarget,
    /// The timeline recovery ends on (write it as `recovery_target_timeline`).
    pub timeline: u32,
    /// The timeline switches between the backup's timeline and `timeline`, oldest first.
    pub switches: Vec<TimelineSwitch>,
    /// The cluster's WAL segment size (from an archived segment; 16 MiB when none is archived).
    pub wal_segment_size: u64,
    /// First archived segment recovery needs (`None`: none, the backup suffices).
    pub wal_from: Option<String>,
    /// Last archived segment recovery needs (the target's segment).
    pub wal_to: Option<String>,
    /// Whether `wal_to` is the in-progress `.partial` segment.
    pub wal_to_partial: bool,
    /// Number of archived segments from `wal_from` to `wal_to`.
    pub wal_segments: u64,
    /// The target time: as asked, or the restore point's creation time.
    pub resolved_time: Option<OffsetDateTime>,
    /// The target LSN: as asked, or the end of the restore point record.
    pub resolved_lsn: Option<Lsn>,
    /// Things a human should know (for example how the target was found).
    pub notes: Vec<String>,
}

impl RestorePlan {
    /// The plan as JSON, as `restore --preview -o json` and the API's restore preview
    /// print it: the backup chosen, the timeline recovery ends on, the resolved target,
    /// the WAL range needed and the planner's notes.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        json!({
            "backup": {
                "backup_id": self.backup.backup_id,
                "timeline": self.backup.timeline,
                "start_lsn": self.backup.start_lsn.to_string(),
                "stop_lsn": self.backup.stop_lsn.to_string(),
                "start_time": self.backup.start_time,
                "stop_time": self.backup.stop_time,
            },
            "timeline": self.timeline,
            "target": {
                "kind": self.target.kind(),
                "time": self.resolved_time.map(crate::format_utc),
                "lsn": self.resolved_lsn.map(|l| l.to_string()),
                "name": match &self.target { crate::PitrTarget::Name(n) => Some(n.clone()), _ => None },
            },
            "wal": {
                "from": self.wal_from,
                "to": self.wal_to,
                "to_partial": self.wal_to_partial,
                "segments": self.wal_segments,
                "segment_size": self.wal_segment_size,
            },
            "notes": self.notes,
        })
    }
}

impl RestorePlan {
    /// The `recovery_target_*` setting for this plan.
    pub fn recovery_target(&self) -> RecoveryTarget {
        match &self.target {
            PitrTarget::Latest => RecoveryTarget::Latest,
            PitrTarget::Time(t) => RecoveryTarget::Time(format_recovery_target_time(*t)),
            PitrTarget::Lsn(l) => RecoveryTarget::Lsn(l.to_string()),
            PitrTarget::Name(n) => RecoveryTarget::Name(n.clone()),
        }
    }

    /// The selector that restores exactly the planned backup.
    pub fn backup_selector(&self) -> BackupSelector {
        BackupSelector::Id(self.backup.backup_id.clone())
    }
}

/// An hs-pg error (segment name, history file, WAL decoding) as a planning error: same
/// code, message and suggestion; a `usage.*` one stays a usage error, the others are about
/// what the repository holds.
fn pg_err(e: hs_pg::Error) -> Error {
    let kind = if e.code().starts_with("usage.") {
        ErrorKind::Usage
    } else {
        ErrorKind::Repository
    };
    e.with_kind(kind)
}

fn planned(m: &BackupManifest) -> Result<PlannedBackup> {
    Ok(PlannedBackup {
        backup_id: m.backup_id.clone(),
        timeline: m.timeline,
        start_lsn: m.start_lsn,
        stop_lsn: m.stop_lsn,
        start_time: m.start_time.clone(),
        stop_time: m.stop_time.clone(),
    })
}

fn stop_time(b: &PlannedBackup) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(&b.stop_time, &Rfc3339).map_err(|_| {
        Error::of_kind(
            ErrorKind::Repository,
            code::VERIFY_MANIFEST_INVALID,
            format!(
                "backup {} has an invalid stop time {:?}",
                b.backup_id, b.stop_time
            ),
        )
        .with_suggestion("run `pg_hardstorage verify` on this backup and restore another one")
    })
}

fn before_backup(target: &PitrTarget, b: &PlannedBackup, explicit: bool) -> Error {
    let what = if explicit {
        format!("backup {}", b.backup_id)
    } else {
        format!("the oldest backup, {},", b.backup_id)
    };
    Error::of_kind(
        ErrorKind::Target,
        code::CONFLICT_TARGET_BEFORE_BACKUP,
        format!(
            "the {target} lies before the end of {what} which ends at {} (LSN {})",
            b.stop_time, b.stop_lsn
        ),
    )
    .with_suggestion(if explicit {
        "restore `latest` to let pg_hardstorage choose a backup that ends before the target, or pick an older backup id from `pg_hardstorage list`"
    } else {
        "choose a target after the oldest backup's end; `pg_hardstorage list` shows the backups"
    })
}

/// What planning needs to know about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegInfo {
    end_of_valid_wal: Lsn,
    max_commit_time: Option<i64>,
    restore_points: Vec<RestorePoint>,
}

const SUMMARY_MAGIC: &str = "hs-wal-summary 1";

impl SegInfo {
    /// A small line-based text form (names hex-encoded).
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{SUMMARY_MAGIC}\nend {:x}\n", self.end_of_valid_wal.0);
        if let Some(m) = self.max_commit_time {
            out.push_str(&format!("max {m}\n"));
        }
        for rp in &self.restore_points {
            let hex: String = rp.name.bytes().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!(
                "rp {:x} {:x} {} {hex}\n",
                rp.start_lsn.0, rp.lsn.0, rp.time
            ));
        }
        out.into_bytes()
    }

    fn decode(data: &[u8]) -> Option<SegInfo> {
        let text = std::str::from_utf8(data).ok()?;
        let mut lines = text.lines();
        if lines.next()? != SUMMARY_MAGIC {
            return None;
        }
        let hex64 = |v: &str| u64::from_str_radix(v, 16).ok();
        let mut info = SegInfo {
            end_of_valid_wal: Lsn(0),
            max_commit_time: None,
            restore_points: Vec::new(),
        };
        let mut have_end = false;
        for line in lines {
            let mut f = line.split(' ');
            match (f.next()?, f.next()) {
                ("end", Some(v)) => {
                    info.end_of_valid_wal = Lsn(hex64(v)?);
                    have_end = true;
                }
                ("max", Some(v)) => info.max_commit_time = Some(v.parse().ok()?),
                ("rp", Some(start)) => {
                    let (end, time, name) = (f.next()?, f.next()?, f.next()?);
                    if name.len() % 2 != 0 {
                        return None;
                    }
                    let bytes = (0..name.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()?;
                    info.restore_points.push(RestorePoint {
                        name: String::from_utf8(bytes).ok()?,
                        lsn: Lsn(hex64(end)?),
                        start_lsn: Lsn(hex64(start)?),
                        time: time.parse().ok()?,
                    });
                }
                _ => return None,
            }
            if f.next().is_some() {
                return None;
            }
        }
        have_end.then_some(info)
    }
}

/// Archived WAL of one deployment, with segment summaries cached for the run.
struct Archive<'a> {
    repo: &'a Repository,
    deployment: &'a str,
    listing: WalListing,
    seg_size: u64,
    summaries: HashMap<(u32, u64), SegInfo>,
}

impl<'a> Archive<'a> {
    async fn open(repo: &'a Repository, deployment: &'a str, tli: u32) -> Result<Archive<'a>> {
        let mut listing = repo.list_wal(deployment).await?;
        // The segment size is the length of a complete segment.
        let seg_size = wal_segment_size(repo, deployment, &mut listing, Some(tli))
            .await?
            .unwrap_or(DEFAULT_WAL_SEGMENT_SIZE);
        Ok(Archive {
            repo,
            deployment,
            listing,
            seg_size,
            summaries: HashMap::new(),
        })
    }

    fn name(&self, tli: u32, segno: u64) -> String {
        wal_segment_name(tli, segno, self.seg_size)
    }

    fn complete(&self, tli: u32, segno: u64) -> bool {
        self.listing
            .segments
            .iter()
            .any(|s| s.timeline == tli && s.segno(self.seg_size) == segno)
    }

    /// The partial segment is usable only when it is the newest on its timeline.
    fn partial(&self, tli: u32, segno: u64) -> bool {
        self.listing
            .partials
            .iter()
            .any(|s| s.timeline == tli && s.segno(self.seg_size) == segno)
            && self.newest(tli).is_some_and(|n| n == segno)
    }

    fn archived(&self, tli: u32, segno: u64) -> bool {
        self.complete(tli, segno) || self.partial(tli, segno)
    }

    /// The newest archived segment number of `tli` (complete or partial).
    fn newest(&self, tli: u32) -> Option<u64> {
        self.listing
            .segments
            .iter()
            .chain(self.listing.partials.iter())
            .filter(|s| s.timeline == tli)
            .map(|s| s.segno(self.seg_size))
            .max()
    }

    /// Whether segment `segno` of the path is archived (on the timeline the path reads it from).
    fn archived_on(&self, path: &Path, segno: u64) -> bool {
        self.archived(path.tli_at(segno), segno)
    }

    /// The newest archived segment along `path`.
    fn newest_on(&self, path: &Path) -> Option<u64> {
        for (i, leg) in path.legs.iter().enumerate().rev() {
            let end = path.legs.get(i + 1).map(|l| l.begin);
            if let Some(n) = self.newest(leg.tli).filter(|n| *n >= leg.begin) {
                return Some(match end {
                    Some(e) if n >= e => e.saturating_sub(1).max(leg.begin),
                    _ => n,
                });
            }
        }
        None
    }

    /// The first missing segment range in `from..=to` along `path`, if any.
    fn first_gap(&self, path: &Path, from: u64, to: u64) -> Option<(u64, u64)> {
        let mut s = from;
        while s <= to {
            if !self.archived_on(path, s) {
                let mut e = s;
                while e < to && !self.archived_on(path, e + 1) {
                    e += 1;
                }
                return Some((s, e));
            }
            s += 1;
        }
        None
    }

    fn gap_error(&self, path: &Path, (a, b): (u64, u64), target: &PitrTarget) -> Error {
        let (fa, fb) = (self.name(path.tli_at(a), a), self.name(path.tli_at(b), b));
        let recorded = self
            .listing
            .gaps
            .iter()
            .find(|g| g.from_segment <= fb && g.to_segment >= fa)
            .map(|g| format!(" (recorded gap: {})", g.reason))
            .unwrap_or_default();
        let range = if a == b {
            format!("segment {fa} is")
        } else {
            format!("segments {fa} to {fb} are")
        };
        Error::of_kind(
            ErrorKind::Target,
            code::CONFLICT_TARGET_IN_WAL_GAP,
            format!("WAL needed to reach the {target} is missing: {range} not in the repository{recorded}"),
        )
        .with_suggestion(format!(
            "choose a target before {} (e.g. --to-lsn {}), or a backup taken after the gap; `pg_hardstorage wal list --gaps-only` shows what is missing",
            fa,
            Lsn(a * self.seg_size)
        ))
    }

    /// Summary of an archived segment (complete, or the newest partial):
    /// from the repository's summary object when there is a valid one, else
    /// decoded (and, for a complete segment, stored for next time). A listed
    /// segment that has gone meanwhile (the streamer completed the partial)
    /// is read as a fresh listing names it, which replaces `listing`
    /// ([`read_listed_segment`]).
    async fn summary(&mut self, tli: u32, segno: u64) -> Result<Option<&SegInfo>> {
        if !self.summaries.contains_key(&(tli, segno)) {
            let name = self.name(tli, segno);
            let complete = self.complete(tli, segno);
            if complete {
                let cached = match self.repo.get_wal_summary(self.deployment, &name).await {
                    Ok(c) => c.and_then(|b| SegInfo::decode(&b)),
                    Err(e) => {
                        tracing::debug!("summary of {name} not usable: {e}");
                        None
                    }
                };
                if let Some(info) = cached {
                    self.summaries.insert((tli, segno), info);
                    return Ok(self.summaries.get(&(tli, segno)));
                }
            }
            if !complete && !self.partial(tli, segno) {
                return Ok(None);
            }
            let Some((stored, data)) =
                read_listed_segment(self.repo, self.deployment, &mut self.listing, &name).await?
            else {
                return Ok(None);
            };
            let complete = stored == Stored::Complete;
            let seg =
                SegmentName::from_segno(TimelineId(tli), segno, self.seg_size).map_err(pg_err)?;
            let mut data = &data[..];
            if data.len() as u64 > self.seg_size {
                data = &data[..self.seg_size as usize];
            }
            let s = decode_segment(seg, data).map_err(pg_err)?;
            let info = SegInfo {
                end_of_valid_wal: s.end_of_valid_wal,
                max_commit_time: s.max_commit_time,
                restore_points: s.restore_points,
            };
            if complete {
                if let Err(e) = self
                    .repo
                    .put_wal_summary(self.deployment, &name, &info.encode())
                    .await
                {
                    tracing::debug!("could not store the summary of {name}: {e}");
                }
            }
            self.summaries.insert((tli, segno), info);
        }
        Ok(self.summaries.get(&(tli, segno)))
    }

    /// A description of the newest archived WAL along `path`, for error messages.
    async fn newest_description(&mut self, path: &Path) -> Result<String> {
        let Some(n) = self.newest_on(path) else {
            return Ok(format!("no WAL of timeline {} is archived", path.target));
        };
        let tli = path.tli_at(n);
        let name = self.name(tli, n);
        let s = self.summary(tli, n).await?.cloned();
        // After the read: the streamer may have completed it meanwhile.
        let partial = !self.complete(tli, n);
        let mut d = format!(
            "the newest archived WAL is segment {name}{}",
            if partial { " (in progress)" } else { "" }
        );
        if let Some(s) = s {
            d.push_str(&format!(", valid up to LSN {}", s.end_of_valid_wal));
        }
        Ok(d)
    }
}

fn pg_time(t: OffsetDateTime) -> i64 {
    unix_micros(t).saturating_sub(pg_time_to_unix_micros(0))
}

fn pg_time_text(pg: i64) -> String {
    from_unix_micros(pg_time_to_unix_micros(pg)).map_or_else(|| pg.to_string(), format_utc)
}

/// One timeline of a path: read from segment `begin` on (until the next leg begins).
#[derive(Debug, Clone)]
struct Leg {
    tli: u32,
    begin: u64,
}

/// The timelines recovery reads, from the backup's to the target timeline.
#[derive(Debug, Clone)]
struct Path {
    legs: Vec<Leg>,
    target: u32,
    switches: Vec<TimelineSwitch>,
}

impl Path {
    /// The timeline whose file holds segment `segno`: the newest leg begun by then.
    fn tli_at(&self, segno: u64) -> u32 {
        self.legs
            .iter()
            .rev()
            .find(|l| l.begin <= segno)
            .or(self.legs.first())
            .map_or(self.target, |l| l.tli)
    }
}

fn not_reachable(b: &PlannedBackup, tli: u32, why: String) -> Error {
    Error::of_kind(
        ErrorKind::Target,
        code::CONFLICT_TIMELINE_NOT_REACHABLE,
        format!(
            "timeline {tli} cannot be reached from backup {} (timeline {}, ends at LSN {}): {why}",
            b.backup_id, b.timeline, b.stop_lsn
        ),
    )
    .with_suggestion(
        "pass --to-timeline latest or current, or restore a backup taken on that timeline; `pg_hardstorage wal list` shows the archived timelines",
    )
}

/// The path from `b`'s timeline to timeline `tli`, from `tli`'s archived history.
async fn path_to(ar: &Archive<'_>, b: &PlannedBackup, tli: u32) -> Result<Path> {
    let first = b.stop_lsn.0 / ar.seg_size;
    if tli == b.timeline {
        return Ok(Path {
            legs: vec![Leg { tli, begin: first }],
            target: tli,
            switches: Vec::new(),
        });
    }
    if tli < b.timeline {
        return Err(not_reachable(
            b,
            tli,
            "it is older than the backup's timeline".into(),
        ));
    }
    if !ar.listing.histories.contains(&tli) {
        return Err(not_reachable(
            b,
            tli,
            format!("its history file {tli:08X}.history is not archived"),
        ));
    }
    let raw = ar
        .repo
        .get_wal(ar.deployment, &format!("{tli:08X}.history"))
        .await?;
    let text = std::str::from_utf8(&raw).map_err(|_| {
        Error::of_kind(
            ErrorKind::Repository,
            code::VERIFY_TIMELINE_HISTORY_INVALID,
            format!("the archived history of timeline {tli} is not text"),
        )
    })?;
    let hist = parse_timeline_history(text).map_err(pg_err)?;
    let Some(idx) = hist.iter().position(|e| e.tli.0 == b.timeline) else {
        return Err(not_reachable(
            b,
            tli,
            format!("its history does not contain timeline {}", b.timeline),
        ));
    };
    if hist[idx].switch_lsn < b.stop_lsn {
        return Err(not_reachable(
            b,
            tli,
            format!(
                "it branched off timeline {} at LSN {}, before the backup's end",
                b.timeline, hist[idx].switch_lsn
            ),
        ));
    }
    let mut legs = vec![Leg {
        tli: b.timeline,
        begin: first,
    }];
    let mut switches = Vec::new();
    let mut prev = &hist[idx];
    for e in hist[idx + 1..].iter() {
        legs.push(Leg {
            tli: e.tli.0,
            begin: prev.switch_lsn.0 / ar.seg_size,
        });
        switches.push(TimelineSwitch {
            from: prev.tli.0,
            to: e.tli.0,
            lsn: prev.switch_lsn,
        });
        prev = e;
    }
    legs.push(Leg {
        tli,
        begin: prev.switch_lsn.0 / ar.seg_size,
    });
    switches.push(TimelineSwitch {
        from: prev.tli.0,
        to: tli,
        lsn: prev.switch_lsn,
    });
    Ok(Path {
        legs,
        target: tli,
        switches,
    })
}

/// Resolves `choice` for backup `b` into a path.
async fn resolve_path(ar: &Archive<'_>, b: &PlannedBackup, choice: TimelineChoice) -> Result<Path> {
    match choice {
        TimelineChoice::Current => path_to(ar, b, b.timeline).await,
        TimelineChoice::Id(t) => path_to(ar, b, t).await,
        TimelineChoice::Latest => {
            for &t in ar.listing.histories.iter().rev() {
                if t <= b.timeline {
                    break;
                }
                match path_to(ar, b, t).await {
                    Ok(p) => return Ok(p),
                    Err(e) if e.code() == code::CONFLICT_TIMELINE_NOT_REACHABLE => {}
                    Err(e) => return Err(e),
                }
            }
            path_to(ar, b, b.timeline).await
        }
    }
}

/// Plans a restore of `deployment` to `target` on the latest timeline;
/// see [`plan_restore_on`].
pub async fn plan_restore(
    repo: &Repository,
    deployment: &str,
    selector: &BackupSelector,
    target: &PitrTarget,
) -> Result<RestorePlan> {
    plan_restore_on(repo, deployment, selector, target, TimelineChoice::Latest).await
}

/// Plans a restore of `deployment` to `target` along `timeline`: picks
/// the backup (with [`BackupSelector::Latest`], the newest one that ends
/// before the target and from which the timeline can be reached), resolves
/// time and restore-point targets against archived WAL, and checks that
/// every archived segment recovery needs, across timeline switches, is present.
///
/// Errors: `notfound.backup`; `conflict.target_before_backup` (the target
/// lies before the backup's end); `conflict.target_in_wal_gap` (a needed
/// segment is missing; the range is named); `conflict.target_unreachable`
/// (the target is past the newest archived WAL, which is described);
/// `conflict.timeline_not_reachable` (the asked timeline does not descend
/// from the backup's timeline after its end).
pub async fn plan_restore_on(
    repo: &Repository,
    deployment: &str,
    selector: &BackupSelector,
    target: &PitrTarget,
    timeline: TimelineChoice,
) -> Result<RestorePlan> {
    let explicit = matches!(selector, BackupSelector::Id(_));
    let mut cands = Candidates::new(repo, deployment, selector, target, timeline).await?;
    let newest_id = cands.newest.backup_id.clone();
    let mut ar = Archive::open(repo, deployment, cands.newest.timeline).await?;
    let Some((first_candidate, first_path)) = cands.next(&ar).await? else {
        return Err(cands.none_error(explicit).await?);
    };
    let mut notes = Vec::new();
    let Resolved {
        backup,
        path,
        tseg,
        time: resolved_time,
        lsn: resolved_lsn,
    } = match target {
        PitrTarget::Latest => resolve_latest(&ar, first_candidate, first_path, target, &mut notes)?,
        PitrTarget::Lsn(l) => resolve_lsn(&mut ar, first_candidate, first_path, target, l).await?,
        PitrTarget::Time(t) => {
            resolve_time(&mut ar, first_candidate, first_path, target, t, &mut notes).await?
        }
        PitrTarget::Name(n) => {
            let first = (first_candidate, first_path);
            resolve_name(&mut ar, first, &mut cands, target, n, &mut notes).await?
        }
    };

    if explicit {
        // An explicit backup id: it was the only candidate, checked above.
    } else if backup.backup_id != newest_id {
        notes.push(format!(
            "backup {} is the newest one that ends before the target",
            backup.backup_id
        ));
    }
    // Switches recovery passes before the target's segment.
    let switches: Vec<TimelineSwitch> = path
        .switches
        .iter()
        .filter(|s| tseg.is_none_or(|t| s.lsn.0 / ar.seg_size <= t))
        .cloned()
        .collect();
    for s in &switches {
        notes.push(format!(
            "recovery follows timeline {} to timeline {} at LSN {} (segment {} is read from timeline {})",
            s.from,
            s.to,
            s.lsn,
            ar.name(s.to, s.lsn.0 / ar.seg_size),
            s.to
        ));
    }

    let WalRange {
        wal_from,
        wal_to,
        wal_to_partial,
        wal_segments,
    } = wal_range(&ar, &backup, &path, tseg, &mut notes);
    Ok(RestorePlan {
        deployment: deployment.to_owned(),
        backup,
        target: target.clone(),
        timeline: path.target,
        switches,
        wal_segment_size: ar.seg_size,
        wal_from,
        wal_to,
        wal_to_partial,
        wal_segments,
        resolved_time,
        resolved_lsn,
        notes,
    })
}

/// The backup and timeline path a target resolved to, and where recovery stops.
struct Resolved {
    backup: PlannedBackup,
    path: Path,
    /// The segment the target is in (`None`: the backup's end, no WAL after it).
    tseg: Option<u64>,
    time: Option<OffsetDateTime>,
    lsn: Option<Lsn>,
}

/// The archived segments recovery reads, by name.
struct WalRange {
    wal_from: Option<String>,
    wal_to: Option<String>,
    wal_to_partial: bool,
    wal_segments: u64,
}

/// The backups a plan chooses from, newest first, read one manifest at a time: backup
/// ids sort by start time, so the newest backup that ends before a target is found from
/// the listing and the manifests of the backups after the target (a time target skips
/// those by their id, unread), not by reading every manifest.
struct Candidates<'r> {
    repo: &'r Repository,
    target: &'r PitrTarget,
    timeline: TimelineChoice,
    /// The newest backup (the only one for an explicit id), read first: a damaged
    /// newest manifest is refused, never passed over.
    newest: PlannedBackup,
    /// Not handed out yet.
    pending: Option<PlannedBackup>,
    /// The older backups (none for an explicit id).
    rest: Option<BackupsNewestFirst>,
    /// The first backup that ended before the target, reachable or not.
    first_before: Option<PlannedBackup>,
    /// Why the first backup that ended before the target cannot reach the timeline.
    path_err: Option<Error>,
}

impl<'r> Candidates<'r> {
    async fn new(
        repo: &'r Repository,
        deployment: &str,
        selector: &BackupSelector,
        target: &'r PitrTarget,
        timeline: TimelineChoice,
    ) -> Result<Candidates<'r>> {
        let (newest, rest) = match selector {
            BackupSelector::Id(_) => (select_backup(repo, deployment, selector).await?, None),
            BackupSelector::Latest => {
                let mut all = repo.backups_newest_first(deployment).await?;
                match all.next(repo).await? {
                    Some(m) => (m, Some(all)),
                    // The usual "no backups" error.
                    None => (select_backup(repo, deployment, selector).await?, None),
                }
            }
        };
        let newest = planned(&newest)?;
        Ok(Candidates {
            repo,
            target,
            timeline,
            pending: Some(newest.clone()),
            newest,
            rest,
            first_before: None,
            path_err: None,
        })
    }

    /// The next backup that ends before the target and from which the timeline can be
    /// reached, with its path; `None` when there is none left.
    async fn next(&mut self, ar: &Archive<'_>) -> Result<Option<(PlannedBackup, Path)>> {
        loop {
            let b = match self.pending.take() {
                Some(b) => b,
                None => {
                    let Some(rest) = &mut self.rest else {
                        return Ok(None);
                    };
                    if let PitrTarget::Time(t) = self.target {
                        // Started (id time, whole seconds) less than a second before
                        // the target: cannot have ended a second before it.
                        while rest
                            .peek_id()
                            .and_then(id_start_time)
                            .is_some_and(|s| s + time::Duration::SECOND > *t)
                        {
                            rest.skip();
                        }
                    }
                    match rest.next(self.repo).await? {
                        Some(m) => planned(&m)?,
                        None => return Ok(None),
                    }
                }
            };
            if !ends_before(&b, self.target)? {
                continue;
            }
            self.first_before.get_or_insert_with(|| b.clone());
            match resolve_path(ar, &b, self.timeline).await {
                Ok(p) => return Ok(Some((b, p))),
                Err(e) if e.code() == code::CONFLICT_TIMELINE_NOT_REACHABLE => {
                    self.path_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Why no backup qualified: none ends before the target (naming the oldest), or
    /// none of those that do reaches the timeline.
    async fn none_error(&mut self, explicit: bool) -> Result<Error> {
        if let Some(e) = self.path_err.take() {
            return Ok(e);
        }
        if let Some(b) = &self.first_before {
            return Ok(not_reachable(b, 0, "no path was found".into()));
        }
        let oldest = match &self.rest {
            Some(rest) => match rest.oldest(self.repo).await? {
                Some(m) => planned(&m)?,
                None => self.newest.clone(),
            },
            None => self.newest.clone(),
        };
        Ok(before_backup(self.target, &oldest, explicit))
    }
}

/// The start time a backup id names (`YYYYMMDDTHHMMSSZ`, optionally `-N`); `None` for
/// other ids.
fn id_start_time(id: &str) -> Option<OffsetDateTime> {
    let base = id.split('-').next()?;
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(base, &fmt)
        .ok()
        .map(|t| t.assume_utc())
}

/// Whether backup `b` ends before `target`.
fn ends_before(b: &PlannedBackup, target: &PitrTarget) -> Result<bool> {
    Ok(match target {
        PitrTarget::Latest | PitrTarget::Name(_) => true,
        PitrTarget::Lsn(l) => b.stop_lsn <= *l,
        // Manifest times are truncated to the second and taken after
        // the backup's end: only a target a second later is surely after it.
        PitrTarget::Time(t) => stop_time(b)? + time::Duration::SECOND <= *t,
    })
}

/// The end of the archived WAL on the path, after the newest candidate.
fn resolve_latest(
    ar: &Archive<'_>,
    b: PlannedBackup,
    path: Path,
    target: &PitrTarget,
    notes: &mut Vec<String>,
) -> Result<Resolved> {
    let first = b.stop_lsn.0 / ar.seg_size;
    let tseg = ar
        .newest_on(&path)
        .filter(|n| *n > first || ar.archived_on(&path, first));
    match tseg {
        None => notes.push(format!(
            "no WAL after backup {} is archived on timeline {}: the restored cluster ends at the backup's end",
            b.backup_id, path.target
        )),
        Some(n) => {
            if let Some(gap) = ar.first_gap(&path, first + 1, n) {
                return Err(ar.gap_error(&path, gap, target));
            }
        }
    }
    Ok(Resolved {
        backup: b,
        path,
        tseg,
        time: None,
        lsn: None,
    })
}

/// An LSN: its segment must be archived (or the target inside the newest partial).
async fn resolve_lsn(
    ar: &mut Archive<'_>,
    b: PlannedBackup,
    path: Path,
    target: &PitrTarget,
    l: &Lsn,
) -> Result<Resolved> {
    let first = b.stop_lsn.0 / ar.seg_size;
    // When the backup's last segment is not archived, PostgreSQL
    // reads it from the backup's pg_wal, which ends at the segment
    // switch of the backup's end: the target is found in the next one.
    let tseg = if ar.archived_on(&path, first) {
        l.0 / ar.seg_size
    } else {
        (l.0 / ar.seg_size).max(first + 1)
    };
    let newest = ar.newest_on(&path);
    let reachable = match newest {
        Some(n) if n > tseg => true,
        Some(n) if n == tseg => ar
            .summary(path.tli_at(tseg), tseg)
            .await?
            .is_some_and(|s| s.end_of_valid_wal > *l),
        _ => false,
    };
    if !reachable {
        let newest = ar.newest_description(&path).await?;
        return Err(unreachable(target, &newest));
    }
    if tseg > first {
        if let Some(gap) = ar.first_gap(&path, first + 1, tseg) {
            return Err(ar.gap_error(&path, gap, target));
        }
    }
    Ok(Resolved {
        backup: b,
        path,
        tseg: Some(tseg),
        time: None,
        lsn: Some(*l),
    })
}

/// A time: the segment of the first commit after it, found by decoding the archive.
async fn resolve_time(
    ar: &mut Archive<'_>,
    b: PlannedBackup,
    path: Path,
    target: &PitrTarget,
    t: &OffsetDateTime,
    notes: &mut Vec<String>,
) -> Result<Resolved> {
    let want = pg_time(*t);
    let (tseg, _) = scan(ar, &b, &path, target, |s| {
        s.max_commit_time.is_some_and(|m| m > want).then_some(())
    })
    .await?;
    notes.push(format!(
        "recovery stops before the first transaction that committed after {} (in segment {})",
        format_utc(*t),
        ar.name(path.tli_at(tseg), tseg)
    ));
    Ok(Resolved {
        backup: b,
        path,
        tseg: Some(tseg),
        time: Some(*t),
        lsn: None,
    })
}

/// A restore point: the first candidate (newest first) after whose end the archive
/// holds it.
async fn resolve_name(
    ar: &mut Archive<'_>,
    first: (PlannedBackup, Path),
    cands: &mut Candidates<'_>,
    target: &PitrTarget,
    n: &str,
    notes: &mut Vec<String>,
) -> Result<Resolved> {
    let mut found = None;
    let mut last_err = None;
    let mut next = Some(first);
    while let Some((b, path)) = next.take() {
        let stop = b.stop_lsn;
        let res = scan(ar, &b, &path, target, |s| {
            s.restore_points
                .iter()
                .find(|rp| rp.name == *n && rp.start_lsn >= stop)
                .cloned()
        })
        .await;
        match res {
            Ok((tseg, rp)) => {
                found = Some((b, path, tseg, rp));
                break;
            }
            Err(e) => {
                if last_err.is_none() {
                    last_err = Some(e);
                }
            }
        }
        next = cands.next(ar).await?;
    }
    let Some((b, path, tseg, rp)) = found else {
        return Err(last_err.unwrap_or_else(|| unreachable(target, "no archived WAL was examined")));
    };
    notes.push(format!(
        "restore point {n:?} was created at {} and ends at LSN {}",
        pg_time_text(rp.time),
        rp.lsn
    ));
    let t = from_unix_micros(pg_time_to_unix_micros(rp.time));
    Ok(Resolved {
        backup: b,
        path,
        tseg: Some(tseg),
        time: t,
        lsn: Some(rp.lsn),
    })
}

/// The archived segments recovery reads from the backup's end to the target's
/// segment `tseg`.
fn wal_range(
    ar: &Archive<'_>,
    backup: &PlannedBackup,
    path: &Path,
    tseg: Option<u64>,
    notes: &mut Vec<String>,
) -> WalRange {
    let tli = backup.timeline;
    let first = backup.stop_lsn.0 / ar.seg_size;
    let from = if ar.archived_on(path, first) {
        first
    } else {
        first + 1
    };
    let (wal_from, wal_to, wal_to_partial, wal_segments) = match tseg {
        Some(t) if t >= from => (
            Some(ar.name(path.tli_at(from), from)),
            Some(ar.name(path.tli_at(t), t)),
            !ar.complete(path.tli_at(t), t),
            t - from + 1,
        ),
        _ => (None, None, false, 0),
    };
    if !ar.archived_on(path, first) && wal_from.is_some() {
        notes.push(format!(
            "segment {} (the backup's last) is not archived; recovery reads it from the backup's pg_wal",
            ar.name(tli, first)
        ));
    }
    WalRange {
        wal_from,
        wal_to,
        wal_to_partial,
        wal_segments,
    }
}

fn unreachable(target: &PitrTarget, newest: &str) -> Error {
    Error::of_kind(
        ErrorKind::Target,
        code::CONFLICT_TARGET_UNREACHABLE,
        format!("the {target} is past the archived WAL: {newest}"),
    )
    .with_suggestion(
        "choose an earlier target, or wait until `pg_hardstorage wal stream` has archived WAL past it (`pg_hardstorage wal list` shows what is stored)",
    )
}

/// Decodes archived segments along `path` from `b`'s end onwards until
/// `hit` finds the target; a missing segment before that is a gap, the end
/// of the archive is "unreachable".
async fn scan<T>(
    ar: &mut Archive<'_>,
    b: &PlannedBackup,
    path: &Path,
    target: &PitrTarget,
    mut hit: impl FnMut(&SegInfo) -> Option<T>,
) -> Result<(u64, T)> {
    let first = b.stop_lsn.0 / ar.seg_size;
    let Some(newest) = ar.newest_on(path) else {
        return Err(unreachable(
            target,
            &format!("no WAL of timeline {} is archived", path.target),
        ));
    };
    let mut segno = if ar.archived_on(path, first) {
        first
    } else {
        first + 1
    };
    let mut max_commit: Option<i64> = None;
    while segno <= newest {
        // Read first: a read that finds the segment gone re-lists, and the
        // fresh listing decides whether it is archived.
        let summary = ar.summary(path.tli_at(segno), segno).await?.cloned();
        if !ar.archived_on(path, segno) {
            let gap = ar.first_gap(path, segno, newest).unwrap_or((segno, segno));
            return Err(ar.gap_error(path, gap, target));
        }
        if let Some(s) = &summary {
            if let Some(v) = hit(s) {
                return Ok((segno, v));
            }
            max_commit = max_commit.max(s.max_commit_time);
        }
        segno += 1;
    }
    let mut newest_desc = ar.newest_description(path).await?;
    if let Some(m) = max_commit {
        newest_desc.push_str(&format!(
            "; the newest archived commit after backup {} is at {}",
            b.backup_id,
            pg_time_text(m)
        ));
    }
    Err(unreachable(target, &newest_desc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_text_round_trip_and_rejects_garbage() {
        let info = SegInfo {
            end_of_valid_wal: Lsn(0x1_0300_0028),
            max_commit_time: Some(817_350_000_123_456),
            restore_points: vec![RestorePoint {
                name: "before batch 3 é".into(),
                lsn: Lsn(0x300_0100),
                start_lsn: Lsn(0x300_00B8),
                time: -5,
            }],
        };
        let enc = info.encode();
        assert_eq!(SegInfo::decode(&enc), Some(info.clone()));
        let none = SegInfo {
            max_commit_time: None,
            restore_points: Vec::new(),
            ..info
        };
        assert_eq!(SegInfo::decode(&none.encode()), Some(none));
        for bad in [
            &b""[..],
            b"hs-wal-summary 2\nend 0\n",
            b"hs-wal-summary 1\n",
            b"hs-wal-summary 1\nend zz\n",
            b"hs-wal-summary 1\nend 0\nrp 1 2 3 abc\n",
            b"hs-wal-summary 1\nend 0\nmax 1 2\n",
            b"hs-wal-summary 1\nend 0\nwhat 1\n",
            b"\xff\xfe",
        ] {
            assert_eq!(SegInfo::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn switch_segment_is_read_from_the_new_timeline() {
        let path = Path {
            legs: vec![
                Leg { tli: 1, begin: 3 },
                Leg { tli: 2, begin: 7 },
                Leg { tli: 4, begin: 7 },
            ],
            target: 4,
            switches: Vec::new(),
        };
        assert_eq!(path.tli_at(3), 1);
        assert_eq!(path.tli_at(6), 1);
        // Timeline 2 ended in the segment it began in: timeline 4 serves it.
        assert_eq!(path.tli_at(7), 4);
        assert_eq!(path.tli_at(90), 4);
        assert_eq!(
            "latest".parse::<TimelineChoice>().ok(),
            Some(TimelineChoice::Latest)
        );
        assert_eq!(
            "current".parse::<TimelineChoice>().ok(),
            Some(TimelineChoice::Current)
        );
        assert_eq!(
            "12".parse::<TimelineChoice>().ok(),
            Some(TimelineChoice::Id(12))
        );
        for bad in ["0", "-1", "two", ""] {
            let e = bad.parse::<TimelineChoice>().unwrap_err();
            assert_eq!(e.code(), "usage.timeline_invalid");
        }
    }

    proptest::proptest! {
        #[test]
        fn summary_decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = SegInfo::decode(&data);
        }
    }
}
