//! `rotate DEPLOYMENT --policy ...` (retention plan, deleted with --apply) and
//! `repo gc` (delete unreferenced packs after a grace period).

use std::time::Duration;

use anyhow::Result;
use hs_base::code;
use serde_json::json;

use crate::cli::{GlobalArgs, PolicyArg, RepoGcArgs, RotateArgs};
use crate::errors::CliError;
use crate::output::{human_bytes, Output};

/// Parses `90s`, `30m`, `12h`, `7d`, `2w` or combinations such as `1h30m`
/// (a bare number is seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("{s:?}: unknown unit {c:?} (use s, m, h, d, w)")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c:?}"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?}: the last number has no unit"));
    }
    Ok(Duration::from_secs(total))
}

fn policy(a: &RotateArgs) -> Result<hs_repo::RetentionPolicy> {
    let missing = |what: &str, flag: &str| -> anyhow::Error {
        CliError::new(
            code::USAGE_RETENTION_POLICY_INCOMPLETE,
            format!("--policy {what} needs {flag}"),
        )
        .with_suggestion(format!("add {flag}, e.g. `--policy {what} {flag} 7`"))
        .into()
    };
    Ok(match a.policy {
        PolicyArg::Count => hs_repo::RetentionPolicy::Count(
            a.keep.ok_or_else(|| missing("count", "--keep"))? as usize,
        ),
        PolicyArg::Within => {
            hs_repo::RetentionPolicy::Within(a.within.ok_or_else(|| missing("within", "--within"))?)
        }
        PolicyArg::Gfs => {
            if a.keep_daily + a.keep_weekly + a.keep_monthly == 0 {
                return Err(missing("gfs", "--keep-daily"));
            }
            hs_repo::RetentionPolicy::Gfs {
                daily: a.keep_daily,
                weekly: a.keep_weekly,
                monthly: a.keep_monthly,
            }
        }
    })
}

pub async fn rotate(g: &GlobalArgs, a: RotateArgs) -> Result<Output> {
    hs_backup::validate_deployment(&a.deployment)?;
    let policy = policy(&a)?;
    let repo = g
        .settings
        .open_repo(Some(&a.deployment), Some(&a.repo.repo))
        .await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let plan = repo.plan_retention(&a.deployment, &policy, now).await?;
    let applied = if a.apply && !plan.is_empty() {
        Some(repo.apply_retention(&a.deployment, &plan).await?)
    } else {
        None
    };
    let backup_bytes: u64 = plan.deleted().map(|b| b.stored_bytes).sum();
    let mut human = String::new();
    let verb = if a.apply { "Deleted" } else { "Would delete" };
    human.push_str(&format!(
        "Retention for deployment {} ({}):\n",
        a.deployment,
        if a.apply {
            "applied"
        } else {
            "dry run; --apply deletes"
        }
    ));
    for d in &plan.backups {
        human.push_str(&format!(
            "  {} {:<18} {}  {}\n",
            if d.keep { "keep  " } else { "delete" },
            d.backup.backup_id,
            time::OffsetDateTime::from_unix_timestamp(d.backup.start_time)
                .map(hs_backup::rfc3339)
                .unwrap_or_default(),
            d.reasons.join("; ")
        ));
    }
    if plan.backups.is_empty() {
        human.push_str("  no backups\n");
    }
    let wal_range = match (plan.wal_segments.first(), plan.wal_segments.last()) {
        (Some(f), Some(l)) => Some((f.clone(), l.clone())),
        _ => None,
    };
    match &wal_range {
        Some((f, l)) => human.push_str(&format!(
            "WAL: {verb} {} segment(s) {f} .. {l}, {} partial(s), {} gap record(s) ({})\n",
            plan.wal_segments.len(),
            plan.wal_partials.len(),
            plan.wal_gaps.len(),
            human_bytes(plan.wal_bytes)
        )),
        None => human.push_str(&format!(
            "WAL: nothing older than the oldest kept backup{}\n",
            if plan.wal_partials.is_empty() && plan.wal_gaps.is_empty() {
                String::new()
            } else {
                format!(
                    " ({verb} {} partial(s), {} gap record(s))",
                    plan.wal_partials.len(),
                    plan.wal_gaps.len()
                )
            }
        )),
    }
    human.push_str(&format!(
        "Space: WAL {} now; packs only the deleted backups use (at most {}, what they added) are freed by `pg_hardstorage repo gc`\n",
        human_bytes(plan.wal_bytes),
        human_bytes(backup_bytes)
    ));
    let json = json!({
        "deployment": a.deployment,
        "applied": applied.is_some(),
        "policy": format!("{policy:?}"),
        "backups": plan.backups.iter().map(|d| json!({
            "backup_id": d.backup.backup_id,
            "keep": d.keep,
            "reasons": d.reasons,
            "start_lsn": hs_repo::Lsn(d.backup.start_lsn).to_string(),
            "start_time": time::OffsetDateTime::from_unix_timestamp(d.backup.start_time)
                .map(hs_backup::rfc3339).unwrap_or_default(),
            "stored_bytes": d.backup.stored_bytes,
        })).collect::<Vec<_>>(),
        "wal": {
            "segment_size": plan.wal_segment_size,
            "keep_from_segno": plan.wal_keep_from_segno,
            "segments_deleted": plan.wal_segments.len(),
            "first_deleted": wal_range.as_ref().map(|r| r.0.clone()),
            "last_deleted": wal_range.as_ref().map(|r| r.1.clone()),
            "partials_deleted": plan.wal_partials,
            "gaps_deleted": plan.wal_gaps.iter().map(|(f, t)| format!("{f}-{t}")).collect::<Vec<_>>(),
            "bytes": plan.wal_bytes,
        },
        "estimate": {"wal_bytes": plan.wal_bytes, "backup_stored_bytes_at_most": backup_bytes},
        "deleted": applied.as_ref().map(|d| json!({"backups": d.backups, "wal_objects": d.wal_objects})),
    });
    Ok(Output {
        failure: None,
        json,
        human,
    })
}

pub async fn gc(g: &GlobalArgs, a: RepoGcArgs) -> Result<Output> {
    let repo = g.settings.open_repo(None, Some(&a.repo.repo)).await?;
    let r = repo
        .gc(&hs_repo::GcOptions {
            grace: a.grace,
            apply: a.apply,
        })
        .await?;
    let (cond, del) = if a.apply {
        ("Condemned", "Deleted")
    } else {
        ("Would condemn", "Would delete")
    };
    let mut human = format!(
        "Repository {}: {} packs ({}), {} referenced by backups\n",
        repo.url(),
        r.packs_total,
        human_bytes(r.bytes_total),
        r.packs_referenced
    );
    human.push_str(&format!(
        "{cond} {} unreferenced pack(s) ({})\n{del} {} pack(s) ({}), {} index object(s) rewritten\n",
        r.condemned.len(),
        human_bytes(r.condemned_bytes),
        r.deleted.len(),
        human_bytes(r.deleted_bytes),
        r.index_objects_replaced
    ));
    if !r.reprieved.is_empty() {
        human.push_str(&format!(
            "Kept {} condemned pack(s) a newer backup references\n",
            r.reprieved.len()
        ));
    }
    for w in &r.waiting {
        human.push_str(&format!(
            "Waiting: {} pack(s) condemned by record {}: {}\n",
            w.packs, w.record, w.reason
        ));
    }
    if r.expired_leases_removed > 0 {
        human.push_str(&format!(
            "Removed {} expired lease(s)\n",
            r.expired_leases_removed
        ));
    }
    if r.quarantine_records_removed > 0 {
        human.push_str(&format!(
            "Removed {} quarantine record(s) of deleted packs\n",
            r.quarantine_records_removed
        ));
    }
    if r.temporaries_removed > 0 {
        human.push_str(&format!(
            "Removed {} temporary file(s) left by killed writers\n",
            r.temporaries_removed
        ));
    }
    if !a.apply {
        human.push_str("Dry run: nothing was changed; --apply condemns and deletes.\n");
    }
    Ok(Output {
        failure: None,
        json: json!({
            "url": repo.url(),
            "applied": r.applied,
            "grace_seconds": a.grace.as_secs(),
            "packs_total": r.packs_total,
            "bytes_total": r.bytes_total,
            "packs_referenced": r.packs_referenced,
            "condemned": r.condemned,
            "condemned_bytes": r.condemned_bytes,
            "deleted": r.deleted,
            "deleted_bytes": r.deleted_bytes,
            "reprieved": r.reprieved,
            "waiting": r.waiting,
            "index_objects_replaced": r.index_objects_replaced,
            "expired_leases_removed": r.expired_leases_removed,
            "quarantine_records_removed": r.quarantine_records_removed,
            "temporaries_removed": r.temporaries_removed,
        }),
        human,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        for bad in ["", "h", "5x", "5h3", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
