//! Notifications: what happened ([`Event`]: a backup or verify finished, the WAL stream
//! stalled, lags, recorded a gap, failed or stopped) sent to the sinks configured under
//! `notifications:` in pg_hardstorage.yaml ([`SinkConfig`]): a generic webhook (JSON,
//! HMAC-SHA256 signed), a Slack-compatible incoming webhook, and e-mail over SMTP with
//! STARTTLS.
//!
//! Delivery never decides a command's outcome: each sink has a timeout (5 s unless set),
//! sinks are tried at the same time, and a sink that fails is logged once at WARN with
//! the code `notify.delivery_failed`, naming the sink, never its URL or secrets. Every
//! text an event carries passes through [`hs_repo::redact_text`] before it is sent.

use std::path::PathBuf;
use std::time::Duration;

use hs_base::code;
use serde_json::{json, Map, Value};

use crate::error::Error;

mod config;
mod http;
mod smtp;
mod watch;

pub use config::{SinkConfig, SinkKind, StartTls, DEFAULT_SINK_TIMEOUT, MAX_SINK_TIMEOUT};
pub use watch::{StreamNotifier, StreamThresholds, WatchSample, Watchdog, DEFAULT_WAL_STALL_AFTER};

/// The `schema` field of every webhook body.
pub const WEBHOOK_SCHEMA: &str = "pg_hardstorage.notification.v1";

/// The webhook header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Hardstorage-Signature";

/// Every event name, as `on:` accepts them.
pub const EVENT_NAMES: [&str; 12] = [
    "backup.succeeded",
    "backup.failed",
    "backup_verify.succeeded",
    "backup_verify.failed",
    "repo_verify.succeeded",
    "repo_verify.failed",
    "wal_stream.failed",
    "wal_stream.stopped",
    "wal_stream.gap",
    "wal_stream.stalled",
    "wal_stream.lagging",
    "wal_stream.recovered",
];

/// How bad an event is; `on:` filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A command failed, or the stream ended with an error.
    Failure,
    /// Something needs attention: a stall, lag over the limit, a WAL gap.
    Warning,
    /// A command succeeded, the stream recovered or stopped cleanly.
    Success,
}

impl Severity {
    /// `"failure"`, `"warning"` or `"success"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Failure => "failure",
            Severity::Warning => "warning",
            Severity::Success => "success",
        }
    }
}

/// The error an event reports.
#[derive(Debug, Clone, PartialEq)]
pub struct EventError {
    /// The dotted code (`unreachable.connect_failed`).
    pub code: String,
    /// The one-line cause.
    pub message: String,
    /// The suggested fix, if any.
    pub suggestion: Option<String>,
}

/// One notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// One of [`EVENT_NAMES`].
    pub name: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The deployment, when the event has one (`repo verify` has none).
    pub deployment: Option<String>,
    /// The command that reports it (`backup`, `verify`, `repo verify`, `wal stream`).
    pub command: String,
    /// What happened in one word: `succeeded`, `failed`, `stalled`, ...
    pub outcome: &'static str,
    /// The error, for failures.
    pub error: Option<EventError>,
    /// One line for a human.
    pub message: String,
    /// Numbers and ids (backup id, bytes, seconds, LSNs, lag).
    pub figures: Map<String, Value>,
    /// When, RFC 3339 UTC.
    pub timestamp: String,
    /// This machine's host name.
    pub host: String,
}

impl Event {
    /// An event named `name` (one of [`EVENT_NAMES`]; its severity and outcome follow
    /// from the name), now, on this host.
    pub fn new(name: &'static str, deployment: Option<&str>, message: impl Into<String>) -> Event {
        let outcome: &'static str = match name.rsplit('.').next().unwrap_or(name) {
            "succeeded" => "succeeded",
            "failed" => "failed",
            "stopped" => "stopped",
            "gap" => "gap",
            "stalled" => "stalled",
            "lagging" => "lagging",
            _ => "recovered",
        };
        let severity = match outcome {
            "failed" => Severity::Failure,
            "gap" | "stalled" | "lagging" => Severity::Warning,
            _ => Severity::Success,
        };
        let command = match name.split('.').next().unwrap_or("") {
            "backup_verify" => "verify",
            "repo_verify" => "repo verify",
            "wal_stream" => "wal stream",
            other => other,
        };
        Event {
            name,
            severity,
            deployment: deployment.map(str::to_owned),
            command: command.to_owned(),
            outcome,
            error: None,
            message: message.into(),
            figures: Map::new(),
            timestamp: hs_backup::rfc3339(time::OffsetDateTime::now_utc()),
            host: host_name(),
        }
    }

    /// The event with `error` set.
    pub fn with_error(mut self, code: &str, message: &str, suggestion: Option<&str>) -> Event {
        self.error = Some(EventError {
            code: code.to_owned(),
            message: message.to_owned(),
            suggestion: suggestion.map(str::to_owned),
        });
        self
    }

    /// The event with one more figure.
    pub fn figure(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.figures.insert(key.to_owned(), value.into());
        self
    }

    /// The event with every text passed through [`hs_repo::redact_text`].
    fn redacted(&self) -> Event {
        let r = |s: &str| hs_repo::redact_text(s);
        let mut e = self.clone();
        e.message = r(&e.message);
        if let Some(err) = &mut e.error {
            err.message = r(&err.message);
            err.suggestion = err.suggestion.as_deref().map(r);
        }
        for v in e.figures.values_mut() {
            if let Value::String(s) = v {
                *s = r(s);
            }
        }
        e
    }

    /// The webhook body ([`WEBHOOK_SCHEMA`]).
    pub fn to_json(&self) -> Value {
        json!({
            "schema": WEBHOOK_SCHEMA,
            "event": self.name,
            "severity": self.severity.as_str(),
            "deployment": self.deployment,
            "command": self.command,
            "outcome": self.outcome,
            "error": self.error.as_ref().map(|e| json!({
                "code": e.code,
                "message": e.message,
                "suggestion": e.suggestion,
            })),
            "message": self.message,
            "figures": self.figures,
            "timestamp": self.timestamp,
            "host": self.host,
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// A one-line title: `pg_hardstorage: backup of main failed on db1`.
    pub fn title(&self) -> String {
        let what = match &self.deployment {
            Some(d) => format!("{} of {d}", self.command),
            None => self.command.clone(),
        };
        let outcome = match self.outcome {
            "gap" => "recorded a WAL gap",
            o => o,
        };
        format!("pg_hardstorage: {what} {outcome} on {}", self.host)
    }

    /// The plain-text body (e-mail, Slack): the message, the error, the figures.
    pub fn text(&self) -> String {
        let mut t = format!("{}\n", self.message);
        if let Some(e) = &self.error {
            t.push_str(&format!("\nError [{}]: {}\n", e.code, e.message));
            if let Some(s) = &e.suggestion {
                t.push_str(&format!("Suggestion: {s}\n"));
            }
        }
        if !self.figures.is_empty() {
            t.push('\n');
            for (k, v) in &self.figures {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                t.push_str(&format!("{k}: {v}\n"));
            }
        }
        t.push_str(&format!(
            "\nEvent: {} ({})\nHost: {}\nTime: {}\n",
            self.name,
            self.severity.as_str(),
            self.host,
            self.timestamp
        ));
        t
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// `unknown`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What happened to one sink's delivery of one event.
#[derive(Debug)]
pub struct Delivery {
    /// The sink ([`SinkConfig::label`]).
    pub sink: String,
    /// `Ok` when the sink accepted it; else `notify.delivery_failed`.
    pub result: Result<(), Error>,
}

/// The sinks of one deployment (or of the top level), ready to send.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    sinks: Vec<SinkConfig>,
    /// The config file's directory: relative `*_file` paths are relative to it.
    base: Option<PathBuf>,
}

impl Notifier {
    /// A notifier of `sinks`; relative `*_file` paths are read relative to `base`.
    pub fn new(sinks: Vec<SinkConfig>, base: Option<PathBuf>) -> Notifier {
        Notifier { sinks, base }
    }

    /// Whether no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// The sinks.
    pub fn sinks(&self) -> &[SinkConfig] {
        &self.sinks
    }

    /// Whether each sink's URL and secrets can be read now (files, variables); nothing
    /// is sent. `(label, Err(why))` names the key and the file or variable, never a value.
    pub fn check_secrets(&self) -> Vec<(String, Result<(), String>)> {
        let env = |k: &str| std::env::var(k).ok();
        let base = self.base.as_deref();
        self.sinks
            .iter()
            .map(|s| {
                let r = match s.kind() {
                    SinkKind::Webhook => s
                        .resolve_url(base, &env)
                        .and_then(|_| s.resolve_secret(base, &env).map(|_| ())),
                    SinkKind::Slack => s.resolve_url(base, &env).map(|_| ()),
                    SinkKind::Email => s.resolve_password(base, &env).map(|_| ()),
                };
                (s.label(), r)
            })
            .collect()
    }

    /// Sends `event` to every sink that wants it, all at once, each within its timeout.
    /// A failed delivery is logged once at WARN (`notify.delivery_failed`) and returned;
    /// it is never an error of the caller.
    pub async fn send(&self, event: &Event) -> Vec<Delivery> {
        let event = event.redacted();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            if !sink.wants(event.name, event.severity) {
                continue;
            }
            let (sink, event, base) = (sink.clone(), event.clone(), self.base.clone());
            tasks.spawn(async move {
                let label = sink.label();
                let limit = sink.timeout();
                let result = match tokio::time::timeout(limit, deliver(&sink, &event, base)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "no answer within {}",
                        humantime::format_duration(limit)
                    )),
                };
                (i, label, result)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, sink, result) = match joined {
                Ok(done) => done,
                Err(e) => {
                    // A sink task that panicked: said once, like a failed delivery.
                    tracing::warn!(
                        code = code::NOTIFY_DELIVERY_FAILED.as_str(),
                        "notification {}: a sink's task failed: {e}",
                        event.name
                    );
                    continue;
                }
            };
            let result = result.map_err(|detail| {
                let e = Error::new(
                    code::NOTIFY_DELIVERY_FAILED,
                    hs_repo::redact_text(&format!(
                        "notification {} to {sink} failed: {detail}",
                        event.name
                    )),
                )
                .with_suggestion(
                    "check the sink's address and credentials in pg_hardstorage.yaml; \
                     `pg_hardstorage doctor` checks that each sink's secrets can be read",
                );
                tracing::warn!(
                    code = e.code(),
                    suggestion = e.suggestion().unwrap_or_default(),
                    "{e}"
                );
                e
            });
            if result.is_ok() {
                tracing::debug!("notification {} sent to {sink}", event.name);
            }
            out.push((i, Delivery { sink, result }));
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, d)| d).collect()
    }
}

/// One delivery, without its timeout: the error is the detail for the log line.
async fn deliver(sink: &SinkConfig, event: &Event, base: Option<PathBuf>) -> Result<(), String> {
    let env = |k: &str| std::env::var(k).ok();
    let base = base.as_deref();
    match sink.kind() {
        SinkKind::Webhook => {
            let url = sink.resolve_url(base, &env)?;
            let secret = sink.resolve_secret(base, &env)?;
            http::post_webhook(&url, secret.as_deref(), event).await
        }
        SinkKind::Slack => {
            let url = sink.resolve_url(base, &env)?;
            http::post_slack(&url, event).await
        }
        SinkKind::Email => {
            let password = sink.resolve_password(base, &env)?;
            smtp::send_mail(sink, password.as_deref(), event, base).await
        }
    }
}

/// The delay [`Notifier::send`] waits for at most: the longest sink timeout.
pub fn longest_timeout(sinks: &[SinkConfig]) -> Duration {
    sinks
        .iter()
        .map(SinkConfig::timeout)
        .max()
        .unwrap_or(Duration::ZERO)
}
