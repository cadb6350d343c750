//! `verify DEPLOYMENT latest|ID` and `repo verify`: read data back and report every
//! problem, one line per check; exit 9 when anything is damaged, missing or forged.

use anyhow::Result;
use serde_json::json;

use crate::cli::{GlobalArgs, RepoVerifyArgs, VerifyBackupArgs};
use crate::errors::CliError;
use crate::output::{human_bytes, Output};

pub async fn verify_backup(g: &GlobalArgs, a: VerifyBackupArgs) -> Result<Output> {
    hs_backup::validate_deployment(&a.deployment)?;
    let repo = g
        .settings
        .open_repo(Some(&a.deployment), Some(&a.repo.repo))
        .await?;
    // `latest` is the newest backup; a damaged newest manifest is refused, naming it and
    // the newest intact backup (`verify.latest_backup_damaged`), never passed over.
    let backup_id = if a.backup == "latest" {
        repo.latest_backup(&a.deployment).await?.backup_id
    } else {
        a.backup.clone()
    };
    let report = repo.verify_backup(&a.deployment, &backup_id).await?;
    let quarantined = quarantine(&repo, &report, a.quarantine).await?;
    let title = format!("Backup {backup_id} of deployment {}", a.deployment);
    Ok(render(
        &report,
        &title,
        json!({"deployment": a.deployment, "backup_id": backup_id}),
        quarantined,
    ))
}

pub async fn verify_repo(g: &GlobalArgs, a: RepoVerifyArgs) -> Result<Output> {
    let repo = g.settings.open_repo(None, Some(&a.repo.repo)).await?;
    let report = repo.verify_repo().await?;
    let quarantined = quarantine(&repo, &report, a.quarantine).await?;
    let title = format!("Repository {}", repo.url());
    Ok(render(
        &report,
        &title,
        json!({"repo_id": repo.id(), "url": repo.url()}),
        quarantined,
    ))
}

/// With `--quarantine`, quarantines the damaged packs the report names; `None` without.
async fn quarantine(
    repo: &hs_repo::Repository,
    report: &hs_repo::VerifyReport,
    on: bool,
) -> Result<Option<Vec<(String, bool)>>> {
    if !on {
        return Ok(None);
    }
    Ok(Some(repo.quarantine_damaged(report).await?))
}

/// One line per check (✓/✗), each problem and warning under it, then a summary;
/// a report with problems becomes the command's failure (exit 9). `quarantined` lists
/// the packs `--quarantine` handled (with whether they were new), `None` without it.
fn render(
    report: &hs_repo::VerifyReport,
    title: &str,
    mut head: serde_json::Value,
    quarantined: Option<Vec<(String, bool)>>,
) -> Output {
    let mut human = String::new();
    for c in &report.checks {
        let mark = if c.failed == 0 { '✓' } else { '✗' };
        human.push_str(&format!(
            "{mark} {:<12} {:>8}  {}",
            c.name, c.checked, c.detail
        ));
        if c.failed > 0 {
            human.push_str(&format!(" ({} problem(s))", c.failed));
        }
        human.push('\n');
    }
    for p in &report.problems {
        human.push_str(&format!("  ✗ [{}] {}: {}", p.code, p.object, p.message));
        if p.count > 1 {
            human.push_str(&format!(" (x{})", p.count));
        }
        human.push('\n');
    }
    if report.problems_omitted > 0 {
        human.push_str(&format!(
            "  ... and {} more problem(s) not listed\n",
            report.problems_omitted
        ));
    }
    for w in &report.warnings {
        human.push_str(&format!("  ! [{}] {}: {}\n", w.code, w.object, w.message));
    }
    let total = report.problems.len() as u64 + report.problems_omitted;
    if report.is_ok() {
        human.push_str(&format!(
            "{title}: OK ({} read, {} warning(s))\n",
            human_bytes(report.bytes_read),
            report.warnings.len()
        ));
    } else {
        human.push_str(&format!(
            "{title}: {total} problem(s) found ({} read)\n",
            human_bytes(report.bytes_read)
        ));
    }
    // Damaged packs: those not quarantined yet, and those quarantined that backups
    // still read damaged chunks from (they cannot heal).
    let pack_problems = || {
        report
            .problems
            .iter()
            .filter(|p| p.object.starts_with("data/"))
    };
    let unquarantined = pack_problems().filter(|p| !p.quarantined).count();
    let stuck: Vec<&str> = {
        let mut v: Vec<&str> = pack_problems()
            .filter(|p| p.quarantined)
            .flat_map(|p| p.backups.iter().map(String::as_str))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if let Some(q) = &quarantined {
        for (pack, new) in q {
            human.push_str(&format!(
                "  quarantined {pack}{}\n",
                if *new { "" } else { " (already)" }
            ));
        }
        head["quarantined"] = json!(q.iter().map(|(p, _)| p).collect::<Vec<_>>());
    }
    head["ok"] = json!(report.is_ok());
    head["report"] = serde_json::to_value(report).unwrap_or_default();
    let failure = report.to_error().map(|e| {
        let mut c = CliError::new(e.code(), e.to_string());
        let suggestion = match (&quarantined, unquarantined, stuck.is_empty()) {
            (Some(_), n, _) if n > 0 => Some(
                "take a new backup of each deployment now: it stores fresh copies of the \
                 quarantined packs' chunks, and older backups read those copies; \
                 `pg_hardstorage repo gc --apply` deletes the damaged packs once no backup \
                 needs them"
                    .to_owned(),
            ),
            (None, n, _) if n > 0 => Some(
                "run `pg_hardstorage repo verify --quarantine` so that new backups stop \
                 using the damaged pack(s), then take a new backup; until then restore \
                 another backup"
                    .to_owned(),
            ),
            (_, _, false) => Some(format!(
                "the damaged pack(s) are quarantined already and a newer backup did not store \
                 their damaged chunks again (the data changed or is gone from the cluster): \
                 these backups cannot be restored completely: {}; restore a newer backup, take \
                 a new one if none was taken since the quarantine, and see runbook 4 in \
                 docs/runbooks.md",
                if stuck.len() > 10 {
                    format!("{}, and {} more", stuck[..10].join(", "), stuck.len() - 10)
                } else {
                    stuck.join(", ")
                }
            )),
            _ => e.suggestion().map(str::to_owned),
        };
        if let Some(s) = suggestion {
            c = c.with_suggestion(s);
        }
        c
    });
    Output {
        json: head,
        human,
        failure,
    }
}
