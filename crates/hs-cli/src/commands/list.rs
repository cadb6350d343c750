//! `list`: a deployment's backups as an inventory a DBA reads like `pgbackrest info`:
//! when each ran and for how long, the WAL range it needs (LSNs and segment names), what
//! it read, what the server sent, what it added to the repository and how much of it the
//! repository already held.

use anyhow::Result;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::GlobalArgs;
use crate::output::{human_bytes, Output};

/// The deduplication figure of `list` and `backup` (docs/cli.md, "list"): the share of a
/// backup's chunk references that added no new chunk to the repository, in percent (one
/// decimal): `(chunks - new_chunks) / chunks`. A chunk counts as reused when the
/// repository already held it or it repeated within the backup (zero pages, copies), so
/// a first backup shows only its inner repeats and a backup of a cluster that barely
/// changed is close to 100%. `None` for a backup without chunks.
pub(crate) fn reused_percent(chunks: u64, new_chunks: u64) -> Option<f64> {
    (chunks > 0).then(|| {
        let reused = chunks.saturating_sub(new_chunks) as f64 / chunks as f64 * 100.0;
        (reused * 10.0).round() / 10.0
    })
}

/// `reused_percent` as text: `99.8%`, or `-` when there is nothing to say.
pub(crate) fn reused_text(chunks: u64, new_chunks: u64) -> String {
    reused_percent(chunks, new_chunks).map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%"))
}

/// Seconds from `start` to `stop` (RFC 3339); `None` when either does not parse.
fn duration_seconds(start: &str, stop: &str) -> Option<f64> {
    let a = OffsetDateTime::parse(start, &Rfc3339).ok()?;
    let b = OffsetDateTime::parse(stop, &Rfc3339).ok()?;
    Some(((b - a).as_seconds_f64() * 1000.0).round().max(0.0) / 1000.0)
}

/// A duration as a DBA reads it: `0.4s`, `12.3s`, `4m05s`, `2h03m`.
pub(crate) fn human_duration(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// Bytes per second as text (`41.0 MiB/s`); `-` when no time passed.
pub(crate) fn human_rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".to_owned();
    }
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

/// The WAL segment size of the deployment: that of a stored segment (one read), else
/// PostgreSQL's default 16 MiB (a deployment whose WAL is not streamed).
async fn segment_size(repo: &hs_repo::Repository, deployment: &str) -> Result<u64> {
    let mut wal = repo.list_wal(deployment).await?;
    Ok(hs_pitr::wal_segment_size(repo, deployment, &mut wal, None)
        .await?
        .unwrap_or(hs_repo::DEFAULT_WAL_SEGMENT_SIZE))
}

/// The name of the segment holding `lsn` on timeline `tli` (PostgreSQL's `XLByteToSeg`,
/// as in `backup_label`'s `START/STOP WAL LOCATION` lines).
fn segment_of(tli: u32, lsn: hs_repo::Lsn, seg_size: u64) -> String {
    hs_repo::wal_segment_name(tli, lsn.0 / seg_size, seg_size)
}

/// One intact backup's JSON row and human lines.
fn backup_row(m: &hs_repo::BackupManifest, seg_size: u64) -> (serde_json::Value, String) {
    let s = &m.stats;
    let secs = duration_seconds(&m.start_time, &m.stop_time);
    let (start_seg, stop_seg) = (
        segment_of(m.timeline, m.start_lsn, seg_size),
        segment_of(m.timeline, m.stop_lsn, seg_size),
    );
    let kind = if m.incremental.is_some() {
        "incr"
    } else {
        "full"
    };
    let or_dash = |n: u64| {
        if n == 0 {
            "-".to_owned()
        } else {
            human_bytes(n)
        }
    };
    let line = format!(
        "{:<18} {:<4} {:<21} {:>8} {:>3} {:>10} {:>10} {:>10} {:>7}\n{:<18} stopped {}, WAL {} ({start_seg}) .. {} ({stop_seg})\n",
        m.backup_id,
        kind,
        m.start_time,
        secs.map_or_else(|| "-".to_owned(), human_duration),
        m.timeline,
        human_bytes(s.logical_bytes),
        or_dash(s.sent_bytes),
        human_bytes(s.stored_bytes),
        reused_text(s.chunks, s.new_chunks),
        "",
        m.stop_time,
        m.start_lsn,
        m.stop_lsn,
    );
    let row = json!({
        "backup_id": m.backup_id,
        "status": "ok",
        "type": if m.incremental.is_some() { "incremental" } else { "full" },
        "incremental_from": m.incremental.as_ref().map(|i| &i.parent_backup_id),
        "start_time": m.start_time,
        "stop_time": m.stop_time,
        "duration_seconds": secs,
        "timeline": m.timeline,
        "start_lsn": m.start_lsn,
        "stop_lsn": m.stop_lsn,
        "start_segment": start_seg,
        "stop_segment": stop_seg,
        "wal_segment_size": seg_size,
        "pg_version": m.pg_version,
        "files": s.files,
        "logical_bytes": s.logical_bytes,
        "sent_bytes": s.sent_bytes,
        "stored_bytes": s.stored_bytes,
        "chunks": s.chunks,
        "new_chunks": s.new_chunks,
        "reused_percent": reused_percent(s.chunks, s.new_chunks),
    });
    (row, line)
}

/// Every backup of the deployment, oldest first. A backup whose manifest does not open or
/// verify is listed as `damaged` (its object and error code) among the others, and the
/// command still exits 0: `list` is an inventory; `verify` and `repo verify` are the
/// checks that exit 9 (see docs/exit-codes.md). The summaries come from the deployment's
/// catalog (a few requests however many backups there are); `check` opens every manifest.
pub(crate) async fn list(
    g: &GlobalArgs,
    deployment: &str,
    url: &str,
    check: bool,
) -> Result<Output> {
    hs_backup::validate_deployment(deployment)?;
    let repo = g.settings.open_repo(Some(deployment), Some(url)).await?;
    let listing = if check {
        repo.list_backup_summaries_checked(deployment).await?
    } else {
        repo.list_backup_summaries_cataloged(deployment).await?
    };
    if listing.backups.is_empty() && listing.damaged.is_empty() {
        let read = hs_ops::NameUse::Read;
        hs_ops::check_deployment_name(&g.settings, &repo, deployment, read).await?;
    }
    let seg_size = if listing.backups.is_empty() {
        hs_repo::DEFAULT_WAL_SEGMENT_SIZE
    } else {
        segment_size(&repo, deployment).await?
    };
    // (sort key, JSON row, human lines): intact backups by start time, each damaged one
    // placed by its id (ids sort by start time).
    let mut rows: Vec<(String, serde_json::Value, String)> = Vec::new();
    for m in &listing.backups {
        let (row, line) = backup_row(m, seg_size);
        rows.push((m.backup_id.clone(), row, line));
    }
    for d in &listing.damaged {
        let line = format!(
            "{:<18} DAMAGED [{}] {}: cannot be restored; see runbook 4 in docs/runbooks.md\n",
            d.backup_id, d.code, d.object
        );
        let row = json!({
            "backup_id": d.backup_id,
            "status": "damaged",
            "object": d.object,
            "error_code": d.code,
            "error": d.message,
        });
        // Before the first intact backup with a larger id.
        let at = rows
            .iter()
            .position(|(id, _, _)| id.as_str() > d.backup_id.as_str())
            .unwrap_or(rows.len());
        rows.insert(at, (d.backup_id.clone(), row, line));
    }
    let human = list_human(deployment, &rows, listing.damaged.len());
    let total = repo.stored_bytes().await?;
    let damaged = listing.damaged.len();
    let rows: Vec<serde_json::Value> = rows.into_iter().map(|(_, r, _)| r).collect();
    Ok(Output {
        failure: None,
        json: json!({
            "deployment": deployment,
            "backups": rows,
            "damaged": damaged,
            "repository_bytes": total,
        }),
        human,
    })
}

/// The table: a header, the rows, a legend of the size columns, the damaged count.
fn list_human(
    deployment: &str,
    rows: &[(String, serde_json::Value, String)],
    damaged: usize,
) -> String {
    if rows.is_empty() {
        return format!("No backups of deployment {deployment} in this repository.\n");
    }
    let mut human = format!(
        "{:<18} {:<4} {:<21} {:>8} {:>3} {:>10} {:>10} {:>10} {:>7}\n",
        "BACKUP", "TYPE", "STARTED", "DURATION", "TLI", "READ", "SENT", "STORED", "REUSED"
    );
    for (_, _, line) in rows {
        human.push_str(line);
    }
    human.push_str(
        "READ: bytes of the files the backup restores; SENT: bytes the server sent; STORED: \
         bytes the backup added to the repository (compressed, encrypted); REUSED: share of \
         its chunks that added nothing new (already stored, or repeated within it).\n",
    );
    if damaged > 0 {
        human.push_str(&format!(
            "{damaged} backup(s) damaged: their manifest does not open or verify; `pg_hardstorage \
             repo verify` checks everything\n",
        ));
    }
    human
}
