//! `doctor`: run the health checks of hs_ops::doctor for each deployment and
//! render them under a `main — PG 17.2 — primary @ host:port` header: `✓ name: detail`,
//! `✗ name: detail` with a `Suggested fix:` block; `-o json` adds each check's measured
//! `values` (lag bytes, ages in seconds) and the server.

use anyhow::Result;
use hs_base::code;
use serde_json::json;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::errors::CliError;
use crate::output::Output;

pub async fn doctor(g: &GlobalArgs, a: DoctorArgs) -> Result<Output> {
    let req = hs_ops::DoctorRequest {
        deployment: a.deployment.clone(),
        repo: Some(a.repo.repo.clone()),
        pg_connection: a.pg_connection.clone(),
    };
    let reports: Vec<hs_ops::DeploymentReport> =
        hs_ops::doctor::<anyhow::Error>(g.config.as_deref(), g.keyring.clone(), &req).await?;

    let healthy = reports.iter().filter(|r| r.healthy()).count();
    let sick = reports.len() - healthy;
    let mut human = String::new();
    let mut json_reports = Vec::new();
    for r in &reports {
        human.push_str(&header(r));
        let mut checks = Vec::new();
        for c in &r.checks {
            let mark = match c.state {
                hs_ops::CheckState::Ok => "✓",
                hs_ops::CheckState::Issue => "✗",
                hs_ops::CheckState::Skipped => "-",
            };
            let detail = match c.state {
                hs_ops::CheckState::Skipped => format!("not checked ({})", c.detail),
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
                "ok": c.state != hs_ops::CheckState::Issue,
                "detail": c.detail,
                "fix": c.fix,
                "values": c.values_map(),
            }));
        }
        json_reports.push(json!({
            "deployment": r.deployment,
            "healthy": r.healthy(),
            "server": r.server.as_ref().map(|s| json!({
                "version": s.version,
                "role": s.role,
                "host": s.host,
                "port": s.port,
            })),
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
            code::DOCTOR_ISSUES_FOUND,
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

/// `main — PG 17.2 — primary @ db1:5432`, or `main — PostgreSQL not reached` when the
/// server did not answer.
fn header(r: &hs_ops::DeploymentReport) -> String {
    match &r.server {
        Some(s) => format!(
            "{} — PG {} — {} @ {}:{}\n",
            r.deployment, s.version, s.role, s.host, s.port
        ),
        None => format!("{} — PostgreSQL not reached\n", r.deployment),
    }
}
