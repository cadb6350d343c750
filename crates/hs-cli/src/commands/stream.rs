//! `wal preflight` and `wal stream` (the archiving side of WAL).

use std::time::Duration;

use anyhow::Result;
use hs_base::code;
use serde_json::json;

use crate::cli::{GlobalArgs, WalPreflightArgs, WalStreamArgs};
use crate::errors::CliError;
use crate::output::Output;

pub async fn preflight(g: &GlobalArgs, a: WalPreflightArgs) -> Result<Output> {
    hs_backup::validate_deployment(&a.deployment)?;
    let conn = g
        .settings
        .conn_config(&a.deployment, a.pg_connection.as_deref())?;
    let report = hs_backup::preflight(&conn, &a.deployment).await?;
    let mut human = format!(
        "Preflight for deployment {} (slot {}):\n",
        report.deployment, report.slot
    );
    human.push_str(&checks_human(&report));
    // Findings no check line shows (what the role could not see, ...).
    let shown: Vec<&str> = report.checks.iter().filter_map(|c| c.code).collect();
    let mut findings = Vec::new();
    for f in &report.findings {
        if !shown.contains(&f.code) {
            human.push_str(&format!(
                "· {} [{}]: {}\n",
                f.severity.as_str(),
                f.code,
                f.message
            ));
            if let Some(s) = &f.suggestion {
                human.push_str(&format!(
                    "    Suggested fix: {}\n",
                    s.replace('\n', "\n    ")
                ));
            }
        }
        findings.push(json!({
            "code": f.code,
            "severity": f.severity.as_str(),
            "message": f.message,
            "suggestion": f.suggestion,
        }));
    }
    let checks: Vec<_> = report
        .checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "value": c.value,
                "state": c.state.as_str(),
                "code": c.code,
                "suggestion": c.suggestion,
            })
        })
        .collect();
    let settings: serde_json::Map<String, serde_json::Value> = report
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let failure = report.to_error().map(|e| {
        let err = CliError::new(e.code(), e.to_string());
        match e.suggestion() {
            Some(s) => err.with_suggestion(s),
            None => err,
        }
    });
    if failure.is_none() {
        human.push_str("Ready for `pg_hardstorage wal stream`.\n");
    }
    Ok(Output {
        json: json!({
            "deployment": report.deployment,
            "slot": report.slot,
            "server_version_num": report.server_version_num,
            "settings": settings,
            "checks": checks,
            "findings": findings,
            "ready": failure.is_none(),
        }),
        human,
        failure,
    })
}

/// One line per check, `✓ name: value` or `✗ name: value`, and under each ✗ the
/// finding and its fix; `?` marks a check the role could not see.
fn checks_human(report: &hs_backup::PreflightReport) -> String {
    let mut h = String::new();
    for c in &report.checks {
        let mark = match c.state {
            hs_backup::CheckState::Pass => "✓",
            hs_backup::CheckState::Fail | hs_backup::CheckState::Warn => "✗",
            _ => "?",
        };
        let note = match c.state {
            hs_backup::CheckState::Fail => " (fatal)",
            hs_backup::CheckState::Warn => " (warning)",
            _ => "",
        };
        h.push_str(&format!("{mark} {}: {}{note}\n", c.name, c.value));
        if let Some(f) = report.findings.iter().find(|f| Some(f.code) == c.code) {
            h.push_str(&format!("    {} [{}]\n", f.message, f.code));
        }
        if let Some(s) = &c.suggestion {
            h.push_str(&format!(
                "    Suggested fix: {}\n",
                s.replace('\n', "\n    ")
            ));
        }
    }
    h
}

/// `wal stream`, with its notifications: a gap, a stall and lag over `wal_max_age` while
/// it runs (hs_ops::notify::StreamNotifier), and at its end `wal_stream.failed` or
/// `wal_stream.stopped`.
pub async fn stream(g: &GlobalArgs, a: WalStreamArgs) -> Result<Output> {
    let metrics = std::sync::Arc::new(hs_backup::StreamMetrics::new(&a.deployment));
    let notifier = hs_ops::notify::StreamNotifier::start(
        g.settings.notifier(Some(&a.deployment)),
        &a.deployment,
        g.settings.stream_thresholds(&a.deployment),
        metrics.clone(),
    );
    let deployment = a.deployment.clone();
    let result = run_stream(g, a, &metrics, &notifier).await;
    let target = super::notify::Target {
        events: ("wal_stream.stopped", "wal_stream.failed"),
        deployment: Some(deployment),
        summary_last: false,
    };
    notifier
        .finish(super::notify::event_for(&target, &result))
        .await;
    result
}

async fn run_stream(
    g: &GlobalArgs,
    a: WalStreamArgs,
    metrics: &std::sync::Arc<hs_backup::StreamMetrics>,
    notifier: &hs_ops::notify::StreamNotifier,
) -> Result<Output> {
    hs_backup::validate_deployment(&a.deployment)?;
    let conn = g
        .settings
        .conn_config(&a.deployment, a.pg_connection.as_deref())?;
    let url = g
        .settings
        .repo_url(Some(&a.deployment), Some(&a.repo.repo))?;
    let repo = g.settings.open_url(&url).await?;
    let mut opts = hs_backup::StreamOptions::new(&a.deployment);
    let default_partial = if url.starts_with("file://") {
        1.0
    } else {
        10.0
    };
    let partial = a
        .partial_interval
        .or_else(|| {
            g.settings
                .deployment(&a.deployment)
                .and_then(|d| d.partial_interval)
        })
        .unwrap_or(default_partial);
    if !hs_ops::partial_interval_ok(partial) {
        let from = if a.partial_interval.is_some() {
            "--partial-interval".to_owned()
        } else {
            format!("deployments.{}.partial_interval", a.deployment)
        };
        return Err(CliError::new(
            code::USAGE_PARTIAL_INTERVAL_INVALID,
            format!(
                "{from} {partial} is out of range: it must be {}",
                hs_ops::PARTIAL_INTERVAL_RULE
            ),
        )
        .with_suggestion("e.g. --partial-interval 5 (seconds between uploads of the .partial)")
        .into());
    }
    opts.partial_interval = Duration::from_secs_f64(partial);
    opts.synchronous = a.synchronous;
    opts.skip_preflight = a.skip_preflight;
    opts.allow_system_id_change = a.allow_system_id_change;
    if a.no_slot {
        // hs_backup::wal_stream warns about it (once).
        opts.slot = hs_backup::SlotMode::None;
    }

    // SIGTERM / SIGINT: stop cleanly after committing what was received.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stop requested: committing received WAL and ending the stream");
        let _ = tx.send(true);
    });

    // --metrics-listen: serve what the streamer counts until the stream ends.
    let mut metrics_server = None;
    if let Some(addr) = a.metrics_listen {
        let (bound, serve) = hs_ops::bind_metrics(addr, metrics.clone(), rx.clone()).await?;
        tracing::info!("Prometheus metrics at http://{bound}/metrics");
        metrics_server = Some(tokio::spawn(serve));
    }
    // hs_backup::wal_stream logs each event itself (once); the observers count and
    // notify.
    let observer = hs_backup::Tee(&**metrics, notifier);
    let result = hs_backup::wal_stream(&conn, &repo, &opts, rx, &observer).await;
    if let Some(server) = metrics_server {
        server.abort();
    }
    let exit = result?;
    let hs_backup::StreamExit::Shutdown {
        timeline,
        flushed,
        durable,
        received,
        segments,
        ..
    } = exit
    else {
        return Err(CliError::new(
            code::INTERNAL_UNEXPECTED,
            "the streamer ended for an unknown reason",
        )
        .into());
    };
    Ok(Output::new(
        json!({
            "deployment": a.deployment,
            "timeline": timeline.0,
            "flushed_lsn": flushed.to_string(),
            "durable_lsn": durable.to_string(),
            "received_lsn": received.to_string(),
            "segments_archived": segments,
        }),
        format!(
            "Stopped cleanly: timeline {timeline}, received up to {received}, durable up to {durable}{partial}, {segments} segments archived.\n",
            partial = if durable > flushed {
                " (the last segment as a .partial)"
            } else {
                ""
            },
        ),
    ))
}
