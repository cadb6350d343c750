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
    let mut deps_json = Vec::new();
    for (url, s) in &report.deployments {
        let name = &s.deployment;
        human.push_str(&format!("Deployment {name} (repository {url}):\n"));
        let backup_json = match &s.last_backup {
            None => {
                human.push_str("  last backup:  none\n");
                serde_json::Value::Null
            }
            Some(b) => {
                human.push_str(&format!(
                    "  last backup:  {} finished {} ({} ago), {}, {} new (dedup {}); {} backup(s)\n",
                    b.backup_id,
                    b.stop_time,
                    b.age.map_or("?".to_owned(), hs_ops::format_age),
                    human_bytes(b.logical_bytes),
                    human_bytes(b.stored_bytes),
                    ratio_text(ratio(b.logical_bytes, b.stored_bytes)),
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
                })
            }
        };
        let st = &s.stream;
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
        let server_json = match &s.server {
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
        };
        deps_json.push(json!({
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
        }));
    }
    let mut repos_json = Vec::new();
    for r in &report.repositories {
        let (url, deps, u) = (&r.url, &r.deployments, &r.usage);
        human.push_str(&format!(
            "Repository {url}: {} stored ({} in packs); backups of {} hold {}; dedup ratio {}\n",
            human_bytes(u.stored_bytes),
            human_bytes(u.pack_bytes),
            deps.join(", "),
            human_bytes(u.logical_bytes),
            ratio_text(u.dedup_ratio())
        ));
        repos_json.push(json!({
            "url": url,
            "repo_id": r.repo_id,
            "stored_bytes": u.stored_bytes,
            "pack_bytes": u.pack_bytes,
            "logical_bytes": u.logical_bytes,
            "dedup_ratio": u.dedup_ratio(),
        }));
    }
    Ok(Output::new(
        json!({"deployments": deps_json, "repositories": repos_json}),
        human,
    ))
}
