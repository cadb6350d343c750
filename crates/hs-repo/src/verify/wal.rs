//! WAL: the segments a backup needs, and every WAL object of a deployment.

use std::collections::HashMap;

use hs_base::code;
use tokio::task::JoinSet;

use super::{manifest_name, VerifyReport, PARALLEL};
use crate::error::{Error, Result};
use crate::manifest::{BackupManifest, FileKind};
use crate::repo::Repository;
use crate::wal::{
    is_valid_wal_segment_size, parse_wal_segment_name, wal_segment_name, Kind, WalGap,
};

/// A backup spanning more WAL segments than this is not checked segment by segment.
const MAX_WAL_SEGMENTS: u64 = 1 << 20;

pub(super) enum WalCheck {
    Ignored,
    Ok { bytes: u64, segment: bool },
    Bad(Error),
}

impl Repository {
    /// Checks that the WAL needed to make backup `m` consistent exists.
    pub(super) async fn verify_backup_wal(
        &self,
        m: &BackupManifest,
        report: &mut VerifyReport,
    ) -> Result<u64> {
        let mname = manifest_name(&m.deployment, &m.backup_id);
        // Typed in the manifest: a manifest whose LSNs are not LSNs does not load.
        let (start, stop) = (m.start_lsn.0, m.stop_lsn.0);
        // The backup's own WAL (BASE_BACKUP ... WAL): pg_wal/<segment> in the base archive.
        let mut own: HashMap<String, u64> = HashMap::new();
        for a in m.archives.iter().filter(|a| a.tablespace_oid.is_none()) {
            for f in &a.files {
                if let Some(seg) = f.path.strip_prefix("pg_wal/") {
                    if f.kind == FileKind::File && parse_wal_segment_name(seg).is_some() {
                        own.insert(seg.to_string(), f.size);
                    }
                }
            }
        }
        let mut seg_size = own
            .values()
            .copied()
            .find(|s| is_valid_wal_segment_size(*s))
            .unwrap_or(0);
        if seg_size == 0 {
            let listing = self.list_wal(&m.deployment).await?;
            if let Some(s) = listing.segments.iter().find(|s| s.timeline == m.timeline) {
                if let Ok(raw) = self.get_wal(&m.deployment, &s.name).await {
                    seg_size = raw.len() as u64;
                }
            }
        }
        if !is_valid_wal_segment_size(seg_size) {
            seg_size = crate::wal::DEFAULT_WAL_SEGMENT_SIZE;
        }
        let first = start / seg_size;
        let last = if stop > start {
            (stop - 1) / seg_size
        } else {
            first
        };
        if last - first >= MAX_WAL_SEGMENTS {
            report.problem(
                "verify.manifest_corrupt",
                &mname,
                format!("the backup spans more than {MAX_WAL_SEGMENTS} WAL segments"),
            );
            return Ok(0);
        }
        let mut checked = 0;
        for segno in first..=last {
            checked += 1;
            let seg = wal_segment_name(m.timeline, segno, seg_size);
            if own.get(&seg) == Some(&seg_size) {
                continue; // read and checked with the backup's chunks
            }
            let object = format!("deployments/{}/wal/{}/{seg}", m.deployment, &seg[..8]);
            match self.get_wal(&m.deployment, &seg).await {
                Ok(raw) if raw.len() as u64 == seg_size => report.bytes_read += seg_size,
                Ok(raw) => report.problem(
                    "verify.wal_corrupt",
                    &object,
                    format!("segment {seg} is {} bytes, not {seg_size}", raw.len()),
                ),
                Err(e) if e.code() == code::NOTFOUND_WAL_SEGMENT => report.problem(
                    "verify.wal_missing",
                    &object,
                    format!(
                        "segment {seg}, needed to make backup {} consistent, is neither in the \
                         backup nor archived",
                        m.backup_id
                    ),
                ),
                Err(e) if e.code().starts_with("verify.") => report.problem(
                    "verify.wal_corrupt",
                    &object,
                    format!("segment {seg}: {e} ({})", e.code()),
                ),
                Err(e) => return Err(e),
            }
        }
        Ok(checked)
    }

    pub(super) async fn verify_deployment_wal(
        &self,
        deployment: &str,
        names: Vec<String>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let prefix = format!("deployments/{deployment}/wal/");
        let mut set: JoinSet<Result<(String, WalCheck)>> = JoinSet::new();
        let mut todo = names.into_iter();
        let mut seg_size: Option<(u64, String)> = None;
        loop {
            while set.len() < PARALLEL {
                let Some(name) = todo.next() else { break };
                let repo = self.clone();
                let d = deployment.to_string();
                let rel = name[prefix.len()..].to_string();
                set.spawn(async move {
                    let r = repo.check_wal_object(&d, &name, &rel).await;
                    Ok((name, r))
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let (name, r) = res.map_err(|e| {
                Error::new(code::ABORTED_TASK_FAILED, "a WAL verification task failed")
                    .with_source(e)
            })??;
            match r {
                WalCheck::Ignored => {}
                WalCheck::Ok { bytes, segment } => {
                    report.bytes_read += bytes;
                    if segment {
                        match &seg_size {
                            None => seg_size = Some((bytes, name)),
                            Some((s, first)) if *s != bytes => {
                                let msg = format!(
                                    "this segment is {bytes} bytes but {first} is {s}; one deployment has one segment size"
                                );
                                report.problem("verify.wal_corrupt", &name, msg);
                            }
                            _ => {}
                        }
                    }
                }
                WalCheck::Bad(e) if e.code().starts_with("verify.") => {
                    report.problem("verify.wal_corrupt", &name, format!("{e} ({})", e.code()));
                }
                WalCheck::Bad(e) if e.code() == code::NOTFOUND_OBJECT => {}
                WalCheck::Bad(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens and checks one WAL object (`rel` is its name below `wal/`).
    pub(super) async fn check_wal_object(
        &self,
        deployment: &str,
        name: &str,
        rel: &str,
    ) -> WalCheck {
        let Some((dir, file)) = rel.split_once('/') else {
            return WalCheck::Ignored;
        };
        if file.contains('/') {
            return WalCheck::Ignored;
        }
        let res = match dir {
            "history" => self
                .get_wal(deployment, file)
                .await
                .map(|b| (b.len(), false)),
            "summaries" => match self.get_wal_summary(deployment, file).await {
                Ok(b) => Ok((b.map_or(0, |b| b.len()), false)),
                Err(e) => Err(e),
            },
            "gaps" => self.check_gap(name, file).await.map(|n| (n, false)),
            _ => {
                let seg = file.strip_suffix(".partial").unwrap_or(file);
                if parse_wal_segment_name(seg).is_none() || &seg[..8] != dir {
                    return WalCheck::Ignored;
                }
                self.get_wal(deployment, file)
                    .await
                    .map(|b| (b.len(), seg == file))
            }
        };
        match res {
            Ok((bytes, segment)) => WalCheck::Ok {
                bytes: bytes as u64,
                segment,
            },
            Err(e) if e.code() == code::NOTFOUND_WAL_SEGMENT => {
                WalCheck::Bad(Error::new(code::NOTFOUND_OBJECT, "gone"))
            }
            Err(e) if e.code() == code::USAGE_INVALID_WAL_NAME => WalCheck::Ignored,
            Err(e) => WalCheck::Bad(e),
        }
    }

    pub(super) async fn check_gap(&self, name: &str, file: &str) -> Result<usize> {
        let (_, _, raw) = self.open_wal(Kind::Gap, name, true).await?;
        let raw = raw.unwrap_or_default();
        let gap: WalGap = serde_json::from_slice(&raw).map_err(|_| {
            Error::new(
                code::VERIFY_WAL_OBJECT_INVALID,
                format!("WAL object {name} is not a valid gap record"),
            )
        })?;
        if format!("{}-{}", gap.from_segment, gap.to_segment) != file {
            return Err(Error::new(
                code::VERIFY_WAL_OBJECT_INVALID,
                format!("gap record {name} describes another range"),
            ));
        }
        Ok(raw.len())
    }
}
