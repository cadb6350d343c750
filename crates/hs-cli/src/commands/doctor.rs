//! `doctor`: run the health checks of hs_backup::diagnose for each deployment and
//! render them: `✓ name: detail`, `✗ name: detail` with a `Suggested fix:` block.

use anyhow::Result;
use serde_json::json;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::errors::CliError;
use crate::output::Output;

fn problem(e: &hs_backup::Error) -> (String, String) {
    (
        format!("[{}] {e}", e.code()),
        e.suggestion()
            .unwrap_or("fix pg_hardstorage.yaml")
            .to_owned(),
    )
}

pub async fn doctor(g: &GlobalArgs, a: DoctorArgs) -> Result<Output> {
    // Read the config here: a broken one is a finding, not the end of the run.
    let (file, config_problem) = match hs_backup::ConfigFile::discover(g.config.as_deref()) {
        Ok(f) => (f, None),
        Err(e) => (None, Some(problem(&e))),
    };
    let keyring = crate::config::keyring_from(g, file.as_ref())
        .unwrap_or_else(|| crate::commands::keyring_path(g));
    let keyring = std::path::absolute(keyring)?;
    let config = file.as_ref().map(|f| &f.config);

    let names: Vec<String> = match &a.deployment {
        Some(d) => vec![d.clone()],
        None => config
            .map(|c| c.deployments.keys().cloned().collect())
            .unwrap_or_default(),
    };
    if names.is_empty() && config_problem.is_none() {
        return Err(CliError::new(
            "usage.deployment_missing",
            "no deployment to check: none was named and the config lists none",
        )
        .with_suggestion(
            "name one (`pg_hardstorage doctor main --repo URL --pg-connection CONN`), or add deployments to pg_hardstorage.yaml (`pg_hardstorage init`)",
        )
        .into());
    }

    let o = crate::config::overrides(Some(&a.repo.repo), a.pg_connection.as_deref());
    let mut reports = Vec::new();
    if names.is_empty() {
        // Only the broken config to report.
        if let Some((m, f)) = &config_problem {
            reports.push(hs_backup::DeploymentReport {
                deployment: "-".to_owned(),
                checks: vec![hs_backup::Check {
                    name: "config",
                    state: hs_backup::CheckState::Issue,
                    detail: m.clone(),
                    fix: Some(f.clone()),
                }],
            });
        }
    }
    for name in &names {
        hs_backup::validate_deployment(name)?;
        let entry = config.and_then(|c| c.deployment(name));
        let mut t = hs_backup::DoctorTarget::new(name, "", "", &keyring);
        t.repo = hs_backup::resolve_repo(config, Some(name), &o)
            .map(|r| r.value)
            .map_err(|e| problem(&e));
        t.pg_connection = hs_backup::resolve_pg_connection(config, Some(name), &o)
            .map(|r| r.value)
            .map_err(|e| problem(&e));
        t.config_path = file.as_ref().map(|f| f.path.clone());
        t.config_problem = config_problem.clone();
        if let Some(e) = entry {
            t.backup_max_age = e.backup_max_age();
            t.wal_max_age = e.wal_max_age();
        }
        reports.push(hs_backup::diagnose(&t).await);
    }

    let healthy = reports.iter().filter(|r| r.healthy()).count();
    let sick = reports.len() - healthy;
    let mut human = String::new();
    let mut json_reports = Vec::new();
    for r in &reports {
        human.push_str(&format!("Deployment {}:\n", r.deployment));
        let mut checks = Vec::new();
        for c in &r.checks {
            let mark = match c.state {
                hs_backup::CheckState::Ok => "✓",
                hs_backup::CheckState::Issue => "✗",
                hs_backup::CheckState::Skipped => "-",
            };
            let detail = match c.state {
                hs_backup::CheckState::Skipped => format!("not checked ({})", c.detail),
                _ => c.detail.clone(),
            };
            human.push_str(&format!("  {mark} {}: {detail}\n", c.name));
            if let Some(fix) = &c.fix {
                human.push_str("    Suggested fix:\n");
                for line in fix.lines() {
                    human.push_str(&format!("      {line}\n"));
                }
            }
            checks.push(json!({
                "name": c.name,
                "state": c.state.as_str(),
                "ok": c.state != hs_backup::CheckState::Issue,
                "detail": c.detail,
                "fix": c.fix,
            }));
        }
        json_reports.push(json!({
            "deployment": r.deployment,
            "healthy": r.healthy(),
            "checks": checks,
        }));
    }
    if sick == 0 {
        human.push_str(&format!("Summary: {healthy} healthy.\n"));
    } else {
        human.push_str(&format!(
            "Summary: {healthy} healthy, {sick} with issues.\n"
        ));
    }
    let failure = (a.exit_on_issues && sick > 0).then(|| {
        CliError::new(
            "doctor.issues_found",
            format!("doctor found issues in {sick} deployment(s)"),
        )
        .with_suggestion("apply the suggested fixes above, then run `pg_hardstorage doctor` again")
    });
    Ok(Output {
        json: json!({
            "deployments": json_reports,
            "healthy": healthy,
            "with_issues": sick,
        }),
        human,
        failure,
    })
}
