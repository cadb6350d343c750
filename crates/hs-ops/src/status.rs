//! `status`: what the repository holds for a deployment (last backup, stream position)
//! and, when PostgreSQL answers in time, the slot's lag. An unreachable server is part
//! of the answer, not an error.

use std::time::Duration;

use hs_base::code;
use hs_proto::ConnConfig;

use crate::doctor::{age_of, newest_wal, now_unix, probe_slot, SlotProbe};
use crate::error::{Error, Result};
use crate::settings::Settings;

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
    /// Chunks the backup references.
    pub chunks: u64,
    /// Of those, chunks the repository did not hold before it.
    pub new_chunks: u64,
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
    let backups = repo.backup_summaries_cataloged(deployment).await?;
    let last_backup = backups
        .iter()
        .max_by(|a, b| a.stop_time.cmp(&b.stop_time))
        .map(|m| LastBackup {
            backup_id: m.backup_id.clone(),
            stop_time: m.stop_time.clone(),
            age: age_of(&m.stop_time),
            logical_bytes: m.stats.logical_bytes,
            stored_bytes: m.stats.stored_bytes,
            chunks: m.stats.chunks,
            new_chunks: m.stats.new_chunks,
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
        for m in repo.backup_summaries_cataloged(d).await? {
            logical_bytes += m.stats.logical_bytes;
        }
    }
    Ok(RepoUsage {
        stored_bytes,
        pack_bytes,
        logical_bytes,
    })
}

/// What `status` is asked: one deployment or every one of the config, with the
/// repository URL and connection string given by flag (or environment), if any.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    /// The deployment to show; `None`: every deployment of the config file.
    pub deployment: Option<String>,
    /// `--repo`.
    pub repo: Option<String>,
    /// `--pg-connection`.
    pub pg_connection: Option<String>,
    /// How long to wait for PostgreSQL (per step) before showing it as unreachable.
    pub timeout: Duration,
}

/// One repository `status` looked at.
#[derive(Debug, Clone)]
pub struct RepositoryStatus {
    /// Its URL, as resolved.
    pub url: String,
    /// Its id.
    pub repo_id: String,
    /// The deployments shown that live in it, in the order shown.
    pub deployments: Vec<String>,
    /// Its usage.
    pub usage: RepoUsage,
}

/// What `status` reports.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Each deployment with its repository URL, in name order.
    pub deployments: Vec<(String, DeploymentStatus)>,
    /// Each repository once, by URL.
    pub repositories: Vec<RepositoryStatus>,
}

/// `status`: resolves each deployment's repository (opened once per URL) and
/// connection string (a missing or invalid one only means the server is not probed),
/// gathers [`deployment_status`] and then each repository's [`repo_usage`].
/// `usage.deployment_missing` when there is nothing to show.
pub async fn status(settings: &Settings, req: &StatusRequest) -> Result<StatusReport> {
    let names = settings.deployment_names(req.deployment.as_deref());
    if names.is_empty() {
        return Err(Error::new(
            code::USAGE_DEPLOYMENT_MISSING,
            "no deployment to show: none was named and the config lists none",
        )
        .with_suggestion(
            "name one (`pg_hardstorage status main --repo URL`), or add deployments to pg_hardstorage.yaml (`pg_hardstorage init`)",
        ));
    }
    let mut repos: std::collections::BTreeMap<String, (hs_repo::Repository, Vec<String>)> =
        std::collections::BTreeMap::new();
    let mut deployments = Vec::new();
    for name in &names {
        hs_backup::validate_deployment(name)?;
        let url = settings.repo_url(Some(name), req.repo.as_deref())?;
        if !repos.contains_key(&url) {
            let repo = settings.open_url(&url).await?;
            repos.insert(url.clone(), (repo, Vec::new()));
        }
        let Some((repo, deps)) = repos.get_mut(&url) else {
            continue;
        };
        deps.push(name.clone());
        // A name typed on the command line must be one the repository or config knows.
        if req.deployment.is_some() {
            crate::check_deployment_name(settings, repo, name, crate::NameUse::Read).await?;
        }
        // A missing or invalid connection string only means the server is not probed.
        let conn = settings
            .resolve_pg_connection(name, req.pg_connection.as_deref())
            .ok()
            .and_then(|r| ConnConfig::parse(&r.value).ok());
        let s = deployment_status(repo, name, conn.as_ref(), req.timeout).await?;
        deployments.push((url, s));
    }
    let mut repositories = Vec::new();
    for (url, (repo, deps)) in repos {
        let usage = repo_usage(&repo, &deps).await?;
        repositories.push(RepositoryStatus {
            url,
            repo_id: repo.id().to_string(),
            deployments: deps,
            usage,
        });
    }
    Ok(StatusReport {
        deployments,
        repositories,
    })
}
