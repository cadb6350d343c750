//! Notifications after `backup`, `verify` and `repo verify` (and the events `wal stream`
//! sends at its end): the command's outcome as an [`hs_ops::notify::Event`], sent to the
//! sinks pg_hardstorage.yaml configures. A sink's failure is logged by hs-ops and never
//! changes the command's result.

use anyhow::Result;
use serde_json::Value;

use crate::cli::GlobalArgs;
use crate::errors::{classify, CliError};
use crate::output::Output;

/// Which command's outcome is reported.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `.succeeded` / `.failed` pair of event names.
    pub events: (&'static str, &'static str),
    /// The deployment, if the command has one.
    pub deployment: Option<String>,
    /// Whether the one-line message is the first line of the human output (`backup`) or
    /// its last (the verify summaries).
    pub summary_last: bool,
}

/// The event for a command's result: failed when it returned an error or a failure
/// with its output, else succeeded with the output's first-level numbers and ids.
pub fn event_for(t: &Target, result: &Result<Output>) -> hs_ops::notify::Event {
    let dep = t.deployment.as_deref();
    let failed = |e: &CliError| {
        hs_ops::notify::Event::new(t.events.1, dep, e.message.clone()).with_error(
            &e.code,
            &e.message,
            e.suggestion.as_deref(),
        )
    };
    match result {
        Err(e) => failed(&classify(e)),
        Ok(out) => {
            let summary = {
                let mut lines = out.human.lines().filter(|l| !l.trim().is_empty());
                let line = if t.summary_last {
                    lines.next_back()
                } else {
                    lines.next()
                };
                line.unwrap_or("").trim().to_owned()
            };
            let mut e = match &out.failure {
                Some(f) => failed(f),
                None => hs_ops::notify::Event::new(t.events.0, dep, summary.clone()),
            };
            if out.failure.is_some() && !summary.is_empty() {
                e.message = summary;
            }
            if let Value::Object(m) = &out.json {
                for (k, v) in m {
                    if !(v.is_object() || v.is_array() || v.is_null()) {
                        e.figures.insert(k.clone(), v.clone());
                    }
                }
            }
            e
        }
    }
}

/// Sends the event for `result` to the sinks of the target's deployment (the top level
/// for `repo verify`); returns `result` as it was.
pub async fn after(g: &GlobalArgs, t: &Target, result: Result<Output>) -> Result<Output> {
    let notifier = g.settings.notifier(t.deployment.as_deref());
    if !notifier.is_empty() {
        notifier.send(&event_for(t, &result)).await;
    }
    result
}
