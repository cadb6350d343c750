//! `status`: what the repository holds for a deployment (last backup, stream position)
//! and, when PostgreSQL answers in time, the slot's lag. An unreachable server is part
//! of the answer, not an error.

use std::time::Duration;

use hs_proto::ConnConfig;

use crate::doctor::{age_of, newest_wal, now_unix, probe_slot, SlotProbe};
use crate::error::Result;

/// The newest backup of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct LastBackup {
    /// Backup id.
    pub backup_id: String,
    /// Stop time, RFC 3339 UTC.
    pub stop_time: String,
    /// Time since it finished.
    pub age: Option<Duration>,
    /// Bytes of file content in the backup.
    pub logical_bytes: u64,
    /// Bytes this backup added to the repository.
    pub stored_bytes: u64,
    /// Stop LSN.
    pub stop_lsn: String,
}

/// Where the WAL stream has got to, as the repository shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// Newest complete segment archived.
    pub last_segment: Option<String>,
    /// The in-progress `.partial` segment, if any.
    pub partial: Option<String>,
    /// Newest WAL object (segment or partial) and its age.
    pub newest: Option<(String, Duration)>,
    /// Complete segments archived.
    pub segments: usize,
    /// Recorded gaps.
    pub gaps: usize,
}

/// Status of one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentStatus {
    /// Deployment name.
    pub deployment: String,
    /// Backups in the repository.
    pub backups: usize,
    /// The newest one.
    pub last_backup: Option<LastBackup>,
    /// The stream's position.
    pub stream: StreamPosition,
    /// The server's view, or why it could not be had (`code: message`).
    pub server: std::result::Result<SlotProbe, String>,
}

/// Repository-wide figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoUsage {
    /// All objects' bytes.
    pub stored_bytes: u64,
    /// Bytes in packs (backup data after dedup and compression).
    pub pack_bytes: u64,
    /// File content of every backup of the deployments looked at.
    pub logical_bytes: u64,
}

impl RepoUsage {
    /// Logical bytes over pack bytes (`None` with no pack data).
    pub fn dedup_ratio(&self) -> Option<f64> {
        (self.pack_bytes > 0).then(|| self.logical_bytes as f64 / self.pack_bytes as f64)
    }
}

/// Status of `deployment` in `repo`; the server is probed through `conn` (when given)
/// with `timeout` per step.
pub async fn deployment_status(
    repo: &hs_repo::Repository,
    deployment: &str,
    conn: Option<&ConnConfig>,
    timeout: Duration,
) -> Result<DeploymentStatus> {
    hs_backup::validate_deployment(deployment)?;
    let backups = repo.list_backups(deployment).await?;
    let last_backup = backups
        .iter()
        .max_by(|a, b| a.stop_time.cmp(&b.stop_time))
        .map(|m| LastBackup {
            backup_id: m.backup_id.clone(),
            stop_time: m.stop_time.clone(),
            age: age_of(&m.stop_time),
            logical_bytes: m.stats.logical_bytes,
            stored_bytes: m.stats.stored_bytes,
            stop_lsn: m.stop_lsn.to_string(),
        });
    let listing = repo.list_wal(deployment).await?;
    let (newest, segments) = newest_wal(repo.backend().as_ref(), deployment).await?;
    let stream = StreamPosition {
        last_segment: listing.segments.last().map(|s| s.name.clone()),
        partial: listing
            .partials
            .last()
            .map(|s| format!("{}.partial", s.name)),
        newest: newest.map(|(n, t)| {
            (
                n,
                Duration::from_secs(u64::try_from(now_unix() - t).unwrap_or(0)),
            )
        }),
        segments,
        gaps: listing.gaps.len(),
    };
    let server = match conn {
        None => Err("no connection string".to_owned()),
        Some(c) => probe_slot(c, deployment, timeout)
            .await
            .map_err(|e| format!("{}: {e}", e.code())),
    };
    Ok(DeploymentStatus {
        deployment: deployment.to_owned(),
        backups: backups.len(),
        last_backup,
        stream,
        server,
    })
}

/// Repository usage; `logical_bytes` sums the backups of `deployments`.
pub async fn repo_usage(repo: &hs_repo::Repository, deployments: &[String]) -> Result<RepoUsage> {
    let stored_bytes = repo.stored_bytes().await?;
    let pack_bytes = repo.list_packs().await?.iter().map(|p| p.size).sum();
    let mut logical_bytes = 0;
    for d in deployments {
        for m in repo.list_backups(d).await? {
            logical_bytes += m.stats.logical_bytes;
        }
    }
    Ok(RepoUsage {
        stored_bytes,
        pack_bytes,
        logical_bytes,
    })
}
