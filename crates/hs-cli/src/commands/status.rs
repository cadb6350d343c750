//! `status`: per deployment the last backup, the stream position and (when PostgreSQL
//! answers within a few seconds) the slot's lag; per repository its usage and dedup ratio.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::output::{human_bytes, Output};

/// How long status waits for PostgreSQL before showing it as unreachable.
const PG_TIMEOUT: Duration = Duration::from_secs(3);

fn ratio(logical: u64, stored: u64) -> Option<f64> {
    (stored > 0).then(|| logical as f64 / stored as f64)
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("-".to_owned(), |r| format!("{r:.1}x"))
}

pub async fn status(g: &GlobalArgs, a: StatusArgs) -> Result<Output> {
    let req = hs_ops::StatusRequest {
        deployment: a.deployment.clone(),
        repo: Some(a.repo.repo.clone()),
        pg_connection: a.pg_connection.clone(),
        timeout: PG_TIMEOUT,
    };
    let report = hs_ops::status(&g.settings, &req).await?;
    let mut human = String::new();
    let deps_json: Vec<_> = report
        .deployments
        .iter()
        .map(|(url, s)| deployment_section(url, s, &mut human))
        .collect();
    let repos_json: Vec<_> = report
        .repositories
        .iter()
        .map(|r| repository_section(r, &mut human))
        .collect();
    Ok(Output::new(
        json!({"deployments": deps_json, "repositories": repos_json}),
        human,
    ))
}

/// One deployment: its lines appended to `human`, its JSON returned.
fn deployment_section(
    url: &str,
    s: &hs_ops::DeploymentStatus,
    human: &mut String,
) -> serde_json::Value {
    let name = &s.deployment;
    human.push_str(&format!("Deployment {name} (repository {url}):\n"));
    let backup_json = last_backup_section(s, human);
    let st = &s.stream;
    stream_line(st, human);
    let server_json = server_section(&s.server, human);
    json!({
        "deployment": name,
        "repo": url,
        "backups": s.backups,
        "last_backup": backup_json,
        "stream": {
            "last_segment": st.last_segment,
            "partial": st.partial,
            "newest": st.newest.as_ref().map(|(n, _)| n),
            "newest_age_seconds": st.newest.as_ref().map(|(_, a)| a.as_secs()),
            "segments": st.segments,
            "gaps": st.gaps,
        },
        "server": server_json,
    })
}

/// The `last backup:` line appended to `human`; its JSON (null without a backup) returned.
fn last_backup_section(s: &hs_ops::DeploymentStatus, human: &mut String) -> serde_json::Value {
    match &s.last_backup {
        None => {
            human.push_str("  last backup:  none\n");
            serde_json::Value::Null
        }
        Some(b) => {
            // The share of reused chunks, as `list` shows it: bytes read over bytes added
            // said 3015.6x for a backup that added 12.9 KiB (issue 19).
            human.push_str(&format!(
                "  last backup:  {} finished {} ({} ago), {} read, {} new ({} of its chunks reused); {} backup(s)\n",
                b.backup_id,
                b.stop_time,
                b.age.map_or("?".to_owned(), hs_ops::format_age),
                human_bytes(b.logical_bytes),
                human_bytes(b.stored_bytes),
                super::list::reused_text(b.chunks, b.new_chunks),
                s.backups
            ));
            json!({
                "backup_id": b.backup_id,
                "stop_time": b.stop_time,
                "age_seconds": b.age.map(|d| d.as_secs()),
                "stop_lsn": b.stop_lsn,
                "logical_bytes": b.logical_bytes,
                "stored_bytes": b.stored_bytes,
                "dedup_ratio": ratio(b.logical_bytes, b.stored_bytes),
                "reused_percent": super::list::reused_percent(b.chunks, b.new_chunks),
            })
        }
    }
}

/// The `stream:` line appended to `human` (its JSON is built with the deployment's).
fn stream_line(st: &hs_ops::StreamPosition, human: &mut String) {
    match &st.newest {
        None => human.push_str("  stream:       no WAL archived\n"),
        Some((newest, age)) => human.push_str(&format!(
            "  stream:       last segment {}, partial {}; newest {newest} {} ago; {} segment(s), {} gap(s)\n",
            st.last_segment.as_deref().unwrap_or("none"),
            st.partial.as_deref().unwrap_or("none"),
            hs_ops::format_age(*age),
            st.segments,
            st.gaps
        )),
    }
}

/// The `server:` line appended to `human`; its JSON returned.
fn server_section(
    server: &std::result::Result<hs_ops::SlotProbe, String>,
    human: &mut String,
) -> serde_json::Value {
    match server {
        Ok(p) => {
            let slot = match (&p.slot_restart_lsn, p.slot_active) {
                (None, _) => "slot missing".to_owned(),
                (Some(_), Some(true)) => "slot active".to_owned(),
                (Some(_), Some(false)) => "slot inactive (no stream connected)".to_owned(),
                (Some(_), None) => "slot exists".to_owned(),
            };
            human.push_str(&format!(
                "  server:       PostgreSQL {}, timeline {}, WAL at {}; {slot}{}\n",
                p.server_version,
                p.timeline,
                p.server_lsn,
                p.lag_bytes()
                    .map(|l| format!(", lag {}", human_bytes(l)))
                    .unwrap_or_default()
            ));
            json!({
                "reachable": true,
                "server_version": p.server_version,
                "timeline": p.timeline,
                "wal_lsn": p.server_lsn.to_string(),
                "slot_exists": p.slot_restart_lsn.is_some(),
                "slot_active": p.slot_active,
                "lag_bytes": p.lag_bytes(),
            })
        }
        Err(why) => {
            human.push_str(&format!("  server:       unreachable ({why})\n"));
            json!({"reachable": false, "error": why})
        }
    }
}

/// One repository: its line appended to `human`, its JSON returned.
fn repository_section(r: &hs_ops::RepositoryStatus, human: &mut String) -> serde_json::Value {
    let (url, deps, u) = (&r.url, &r.deployments, &r.usage);
    human.push_str(&format!(
        "Repository {url}: {} stored ({} in packs); backups of {} hold {}; dedup ratio {}\n",
        human_bytes(u.stored_bytes),
        human_bytes(u.pack_bytes),
        deps.join(", "),
        human_bytes(u.logical_bytes),
        ratio_text(u.dedup_ratio())
    ));
    json!({
        "url": url,
        "repo_id": r.repo_id,
        "stored_bytes": u.stored_bytes,
        "pack_bytes": u.pack_bytes,
        "logical_bytes": u.logical_bytes,
        "dedup_ratio": u.dedup_ratio(),
    })
}
