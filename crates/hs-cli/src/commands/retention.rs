//! `rotate DEPLOYMENT --policy ...` (retention plan, deleted with --apply) and
//! `repo gc` (delete unreferenced packs after a grace period).

use std::time::Duration;

use anyhow::Result;
use hs_base::code;
use serde_json::json;

use crate::cli::{GlobalArgs, MaxUnused, PolicyArg, RepoGcArgs, RotateArgs};
use crate::errors::CliError;
use crate::output::{human_bytes, Output};

/// Parses `repo gc --max-unused`: `5`, `5%`, `12.5%` (0 to 100), or `unlimited`.
pub fn parse_max_unused(s: &str) -> std::result::Result<MaxUnused, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(MaxUnused(None));
    }
    match t.trim_end_matches('%').trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(MaxUnused(Some(p))),
        _ => Err(format!(
            "{s:?} is not a percentage from 0 to 100 (e.g. 5%) or `unlimited`"
        )),
    }
}

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
            max_unused: a.max_unused.0,
        })
        .await?;
    let human = gc_human(repo.url(), &a, &r);
    Ok(Output {
        failure: None,
        json: json!({
            "url": repo.url(),
            "applied": r.applied,
            "grace_seconds": a.grace.as_secs(),
            "max_unused_percent": a.max_unused.0,
            "packs_total": r.packs_total,
            "bytes_total": r.bytes_total,
            "packs_referenced": r.packs_referenced,
            "used_bytes": r.used_bytes,
            "unused_bytes": r.unused_bytes,
            "condemned": r.condemned,
            "condemned_bytes": r.condemned_bytes,
            "repacked": r.repacked,
            "repacked_bytes": r.repacked_bytes,
            "repack_new_packs": r.repack_new_packs,
            "repack_copied_bytes": r.repack_copied_bytes,
            "deleted": r.deleted,
            "deleted_bytes": r.deleted_bytes,
            "reprieved": r.reprieved,
            "waiting": r.waiting,
            "kept": r.kept,
            "index_objects_replaced": r.index_objects_replaced,
            "moved_records_removed": r.moved_records_removed,
            "expired_leases_removed": r.expired_leases_removed,
            "quarantine_records_removed": r.quarantine_records_removed,
            "temporaries_removed": r.temporaries_removed,
        }),
        human,
    })
}

/// Why packs were kept, in words (see `hs_repo::GcKept::reason`).
fn kept_reason(reason: &str, a: &RepoGcArgs) -> String {
    let grace = humantime_secs(a.grace.as_secs());
    match reason {
        "grace" => format!("written within the {grace} grace period (not measured yet)"),
        "grace_unreferenced" => {
            format!("no backup references them, but written within the {grace} grace period")
        }
        "below_threshold" => match a.max_unused.0 {
            Some(p) => format!("the repository's unused share is within --max-unused {p}%"),
            None => "--max-unused unlimited: no repacking".to_string(),
        },
        "no_unused" => "every chunk in them is live".to_string(),
        "indexed_chunks" => "they hold chunks a format 1 backup references by id".to_string(),
        "quarantined" => "quarantined (see `repo verify`)".to_string(),
        "not_indexed" => "no index object lists them (see `repo verify`)".to_string(),
        "damaged" => "their copy failed a check (see `repo verify`)".to_string(),
        other => other.to_string(),
    }
}

fn humantime_secs(s: u64) -> String {
    match s {
        0 => "0s".to_string(),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn gc_human(url: &str, a: &RepoGcArgs, r: &hs_repo::GcReport) -> String {
    let (cond, del, rep) = if a.apply {
        ("Condemned", "Deleted", "Repacked")
    } else {
        ("Would condemn", "Would delete", "Would repack")
    };
    let mut human = format!(
        "Repository {url}: {} packs ({}), {} referenced by backups\n",
        r.packs_total,
        human_bytes(r.bytes_total),
        r.packs_referenced
    );
    if a.max_unused.0.is_some() {
        let total = (r.used_bytes + r.unused_bytes).max(1);
        human.push_str(&format!(
            "Live data about {}; unused in referenced packs about {} ({:.1}%)\n",
            human_bytes(r.used_bytes),
            human_bytes(r.unused_bytes),
            100.0 * r.unused_bytes as f64 / total as f64
        ));
    }
    human.push_str(&format!(
        "{cond} {} unreferenced pack(s) ({})\n",
        r.condemned.len(),
        human_bytes(r.condemned_bytes)
    ));
    if !r.repacked.is_empty() {
        if a.apply {
            human.push_str(&format!(
                "{rep} {} pack(s) ({}): {} live copied into {} new pack(s), {} to free once they are deleted\n",
                r.repacked.len(),
                human_bytes(r.repacked_bytes),
                human_bytes(r.repack_copied_bytes),
                r.repack_new_packs.len(),
                human_bytes(r.repacked_bytes.saturating_sub(r.repack_copied_bytes)),
            ));
        } else {
            human.push_str(&format!(
                "{rep} {} partly dead pack(s) ({})\n",
                r.repacked.len(),
                human_bytes(r.repacked_bytes)
            ));
        }
    }
    for k in &r.kept {
        human.push_str(&format!(
            "Kept {} pack(s) ({}, about {} unused): {}\n",
            k.packs,
            human_bytes(k.bytes),
            human_bytes(k.unused_bytes),
            kept_reason(&k.reason, a)
        ));
    }
    human.push_str(&format!(
        "{del} {} pack(s) ({}), {} index object(s) rewritten\n",
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
    for (n, what) in [
        (r.expired_leases_removed, "expired lease(s)"),
        (
            r.quarantine_records_removed,
            "quarantine record(s) of deleted packs",
        ),
        (
            r.temporaries_removed as usize,
            "temporary file(s) left by killed writers",
        ),
        (r.moved_records_removed, "moved record(s) nothing needs"),
    ] {
        if n > 0 {
            human.push_str(&format!("Removed {n} {what}\n"));
        }
    }
    if !a.apply {
        human.push_str("Dry run: nothing was changed; --apply condemns, repacks and deletes.\n");
    }
    human
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_says_what_it_kept_and_why() {
        let a = RepoGcArgs {
            repo: crate::cli::RepoArg {
                repo: "file:///r".into(),
            },
            grace: Duration::from_secs(3600),
            apply: true,
            max_unused: MaxUnused(Some(5.0)),
        };
        let r = hs_repo::GcReport {
            applied: true,
            used_bytes: 40 << 20,
            unused_bytes: 1 << 20,
            repacked: vec!["data/aa/x".into(), "data/bb/y".into()],
            repacked_bytes: 8 << 20,
            repack_copied_bytes: 3 << 20,
            repack_new_packs: vec!["data/cc/z".into()],
            kept: vec![
                hs_repo::GcKept {
                    reason: "grace".into(),
                    packs: 12,
                    bytes: 3 << 20,
                    unused_bytes: 0,
                },
                hs_repo::GcKept {
                    reason: "below_threshold".into(),
                    packs: 4,
                    bytes: 30 << 20,
                    unused_bytes: 1 << 20,
                },
            ],
            ..hs_repo::GcReport::default()
        };
        let h = gc_human("file:///r", &a, &r);
        for want in [
            "Repacked 2 pack(s) (8.0 MiB): 3.0 MiB live copied into 1 new pack(s), 5.0 MiB to free",
            "Kept 12 pack(s) (3.0 MiB, about 0 B unused): written within the 1 h grace period",
            "Kept 4 pack(s) (30.0 MiB, about 1.0 MiB unused): the repository's unused share is \
             within --max-unused 5%",
        ] {
            assert!(h.contains(want), "{want:?} not in:\n{h}");
        }
    }

    #[test]
    fn max_unused_values() {
        assert_eq!(parse_max_unused("5%").unwrap(), MaxUnused(Some(5.0)));
        assert_eq!(parse_max_unused("12.5").unwrap(), MaxUnused(Some(12.5)));
        assert_eq!(parse_max_unused("unlimited").unwrap(), MaxUnused(None));
        for bad in ["", "-1", "101%", "five"] {
            assert!(parse_max_unused(bad).is_err(), "{bad}");
        }
    }

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
