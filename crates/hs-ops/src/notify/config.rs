//! The `notifications:` entries of pg_hardstorage.yaml: one [`SinkConfig`] per sink, its
//! checks, and how its secrets are read (inline, from a file, or from an environment
//! variable) when a notification is sent.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Severity;

/// How long one delivery may take when the sink sets no `timeout`.
pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `timeout` a sink may set: a notification never holds a command longer.
pub const MAX_SINK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a sink sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A generic webhook: JSON body, signed with HMAC-SHA256 when a secret is set.
    Webhook,
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack,
    /// E-mail over SMTP.
    Email,
}

impl SinkKind {
    /// `"webhook"`, `"slack"` or `"email"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
            SinkKind::Email => "email",
        }
    }
}

/// Whether the SMTP session must be encrypted with STARTTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// The server must offer STARTTLS and its certificate must verify; else nothing is sent.
    #[default]
    Required,
    /// Plain SMTP (a local relay on 127.0.0.1); no password may be configured.
    Off,
}

/// One sink under `notifications:` (top level, or a deployment's own list, which replaces
/// the top-level one for that deployment). Unknown keys are an error; keys of another
/// `type` too.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `webhook`, `slack` or `email`.
    #[serde(rename = "type")]
    pub kind: Option<SinkKind>,
    /// A name for logs and messages (default: the type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which events are sent: severities (`failure`, `warning`, `success`) and event names
    /// (`backup.failed`, `wal_stream.lagging`, ...). Default: failure and warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    /// How long one delivery may take (e.g. `5s`; at most 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,

    /// webhook, slack: the URL (it may hold a token: prefer `url_file` or `url_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook, slack: a file whose first line is the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// webhook, slack: an environment variable holding the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// webhook: the HMAC-SHA256 key of `X-Hardstorage-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// webhook: a file whose first line is the HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// webhook: an environment variable holding the HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,

    /// email: the SMTP server's host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// email: its port (default 587).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// email: `required` (default) or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttls: Option<StartTls>,
    /// email: a PEM file of the CA certificates the server's certificate is checked
    /// against (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// email: the envelope and `From:` address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: the recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// email: the SMTP AUTH user name (AUTH PLAIN, only over TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: the SMTP AUTH password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// email: a file whose first line is the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// email: an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry tokens, and secrets and passwords are secrets: only whether
        // they are set, and where from, is shown.
        let hide = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("SinkConfig")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("on", &self.on)
            .field("timeout", &self.timeout)
            .field("url", &hide(&self.url))
            .field("url_file", &self.url_file)
            .field("url_env", &self.url_env)
            .field("secret", &hide(&self.secret))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("starttls", &self.starttls)
            .field("ca_file", &self.ca_file)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("username", &self.username)
            .field("password", &hide(&self.password))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .finish()
    }
}

/// One secret value's three spellings: inline, `<key>_file`, `<key>_env`.
struct SecretKeys<'a> {
    key: &'static str,
    inline: &'a Option<String>,
    file: &'a Option<PathBuf>,
    env: &'a Option<String>,
}

impl SecretKeys<'_> {
    fn given(&self) -> usize {
        usize::from(self.inline.is_some())
            + usize::from(self.file.is_some())
            + usize::from(self.env.is_some())
    }

    /// The value: inline, the file's first line (a relative path is relative to
    /// `base`), or the variable. `None` when none is given; an error names the key,
    /// the file or the variable, never the value.
    fn read(
        &self,
        base: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        if let Some(v) = self.inline {
            return Ok(Some(v.clone()));
        }
        if let Some(p) = self.file {
            let path = match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p.clone(),
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}_file {}: {e}", self.key, path.display()))?;
            let line = text.lines().next().unwrap_or("").trim().to_owned();
            if line.is_empty() {
                return Err(format!("{}_file {} is empty", self.key, path.display()));
            }
            return Ok(Some(line));
        }
        if let Some(var) = self.env {
            return match env(var).filter(|v| !v.is_empty()) {
                Some(v) => Ok(Some(v)),
                None => Err(format!("{}_env: the variable {var} is not set", self.key)),
            };
        }
        Ok(None)
    }
}

/// The words `on:` accepts besides event names.
const SEVERITY_WORDS: [&str; 3] = ["failure", "warning", "success"];

impl SinkConfig {
    fn url_keys(&self) -> SecretKeys<'_> {
        SecretKeys {
            key: "url",
            inline: &self.url,
            file: &self.url_file,
            env: &self.url_env,
        }
    }

    fn secret_keys(&self) -> SecretKeys<'_> {
        SecretKeys {
            key: "secret",
            inline: &self.secret,
            file: &self.secret_file,
            env: &self.secret_env,
        }
    }

    fn password_keys(&self) -> SecretKeys<'_> {
        SecretKeys {
            key: "password",
            inline: &self.password,
            file: &self.password_file,
            env: &self.password_env,
        }
    }

    /// The type (checked present by [`SinkConfig::check`]).
    pub fn kind(&self) -> SinkKind {
        self.kind.unwrap_or(SinkKind::Webhook)
    }

    /// The name in logs: `name`, else the type.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} sink {n}", self.kind().as_str()),
            None => format!("{} sink", self.kind().as_str()),
        }
    }

    /// The delivery timeout ([`DEFAULT_SINK_TIMEOUT`] unless set).
    pub fn timeout(&self) -> Duration {
        self.timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(DEFAULT_SINK_TIMEOUT)
    }

    /// Whether this sink wants an event of `name` and `severity`. A sink that gets a
    /// stall or lag warning also gets its all-clear, `wal_stream.recovered`.
    pub fn wants(&self, name: &str, severity: Severity) -> bool {
        let on = |name: &str, severity: Severity| match &self.on {
            None => matches!(severity, Severity::Failure | Severity::Warning),
            Some(list) => list
                .iter()
                .any(|w| w == name || w == severity.as_str() || w == "all"),
        };
        on(name, severity)
            || (name == "wal_stream.recovered"
                && (on("wal_stream.stalled", Severity::Warning)
                    || on("wal_stream.lagging", Severity::Warning)))
    }

    /// `on:` as a short text: `failure, warning` (the default) or the list given.
    pub fn on_text(&self) -> String {
        match &self.on {
            None => "failure, warning".to_owned(),
            Some(l) => l.join(", "),
        }
    }

    /// Whether a secret is written into the file itself (then the file is saved 0600).
    pub fn has_inline_secret(&self) -> bool {
        self.url.is_some() || self.secret.is_some() || self.password.is_some()
    }

    /// The checks a config file gets when it is read: the message names the key (the
    /// caller adds file, line and `notifications[i]`), never a secret's value.
    pub fn check(&self, known_events: &[&str]) -> Result<(), String> {
        let Some(kind) = self.kind else {
            return Err("type: is missing (webhook, slack or email)".to_owned());
        };
        let foreign: &[(&str, bool)] = match kind {
            SinkKind::Webhook => &[("host", self.host.is_some())],
            SinkKind::Slack => &[
                ("host", self.host.is_some()),
                ("secret", self.secret_keys().given() > 0),
            ],
            SinkKind::Email => &[
                ("url", self.url_keys().given() > 0),
                ("secret", self.secret_keys().given() > 0),
            ],
        };
        let email_only = [
            ("port", self.port.is_some()),
            ("starttls", self.starttls.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("from", self.from.is_some()),
            ("to", !self.to.is_empty()),
            ("username", self.username.is_some()),
            ("password", self.password_keys().given() > 0),
        ];
        let others: Vec<(&str, bool)> = if kind == SinkKind::Email {
            foreign.to_vec()
        } else {
            foreign.iter().copied().chain(email_only).collect()
        };
        if let Some((key, _)) = others.iter().find(|(_, set)| *set) {
            return Err(format!("{key}: is not a key of a {} sink", kind.as_str()));
        }
        for keys in [self.url_keys(), self.secret_keys(), self.password_keys()] {
            if keys.given() > 1 {
                let k = keys.key;
                return Err(format!("give only one of {k}, {k}_file and {k}_env"));
            }
        }
        if let Some(t) = &self.timeout {
            match humantime::parse_duration(t) {
                Ok(d) if !d.is_zero() && d <= MAX_SINK_TIMEOUT => {}
                _ => {
                    return Err(format!(
                        "timeout: {t:?} is not a duration of more than 0 and at most 60s (e.g. 5s)"
                    ))
                }
            }
        }
        if let Some(on) = &self.on {
            if on.is_empty() {
                return Err("on: is empty (e.g. [failure, warning])".to_owned());
            }
            for w in on {
                if w != "all"
                    && !SEVERITY_WORDS.contains(&w.as_str())
                    && !known_events.contains(&w.as_str())
                {
                    return Err(format!(
                        "on: {w:?} is neither failure, warning, success, all nor an event name ({})",
                        known_events.join(", ")
                    ));
                }
            }
        }
        match kind {
            SinkKind::Webhook | SinkKind::Slack => self.check_url(),
            SinkKind::Email => self.check_email(),
        }
    }

    fn check_url(&self) -> Result<(), String> {
        if self.url_keys().given() == 0 {
            return Err("url: is missing (or give url_file or url_env)".to_owned());
        }
        if let Some(u) = &self.url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                // The URL itself may be a secret: it is not quoted.
                return Err("url: is not an http:// or https:// URL".to_owned());
            }
        }
        Ok(())
    }

    fn check_email(&self) -> Result<(), String> {
        match &self.host {
            None => return Err("host: is missing (the SMTP server)".to_owned()),
            Some(h) if h.is_empty() || h.contains(char::is_whitespace) => {
                return Err(format!("host: {h:?} is not a host name"))
            }
            Some(_) => {}
        }
        match &self.from {
            None => return Err("from: is missing (the sender address)".to_owned()),
            Some(a) => check_address("from", a)?,
        }
        if self.to.is_empty() {
            return Err("to: is missing (a list of recipient addresses)".to_owned());
        }
        for a in &self.to {
            check_address("to", a)?;
        }
        let password = self.password_keys().given() > 0;
        if password && self.username.is_none() {
            return Err("password: is set without username".to_owned());
        }
        if self.username.is_some() && !password {
            return Err(
                "username: is set without password (or password_file, password_env)".to_owned(),
            );
        }
        if self.starttls == Some(StartTls::Off) && self.username.is_some() {
            return Err(
                "username: a password is never sent unencrypted; use starttls: required".to_owned(),
            );
        }
        Ok(())
    }

    /// The URL (webhook, slack), read now from wherever it is configured.
    pub fn resolve_url(
        &self,
        base: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        self.url_keys()
            .read(base, env)?
            .ok_or_else(|| "no url is configured".to_owned())
    }

    /// The HMAC key (webhook), if one is configured.
    pub fn resolve_secret(
        &self,
        base: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        self.secret_keys().read(base, env)
    }

    /// The SMTP password, if one is configured.
    pub fn resolve_password(
        &self,
        base: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        self.password_keys().read(base, env)
    }
}

/// A bare address `local@domain`: no display name, no spaces, no angle brackets, no
/// line breaks (it goes into SMTP commands and headers as it is).
fn check_address(key: &str, a: &str) -> Result<(), String> {
    let ok = a.len() <= 254
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {a:?} is not an e-mail address (write it as name@example.com)"
        ))
    }
}
