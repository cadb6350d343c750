//! Human and JSON output. JSON is one document on stdout with a stable envelope:
//! `{"schema":"pg_hardstorage.v1","command":..,"ok":true,"result":..}` or
//! `{"schema":"pg_hardstorage.v1","command":..,"ok":false,"error":{"code","message","suggestion","exit_code"}}`.

use std::io::Write;
use std::process::ExitCode;

use hs_base::code;
use serde_json::{json, Value};

use crate::cli::OutputFormat;
use crate::errors::CliError;

/// The JSON schema name; bumped only for incompatible changes.
pub const SCHEMA: &str = "pg_hardstorage.v1";

/// What a command produced: a JSON result and its human rendering.
pub struct Output {
    pub json: Value,
    pub human: String,
    /// Set when the command produced a result but must still fail (e.g. preflight
    /// findings): the result is printed and the error decides the exit code.
    pub failure: Option<CliError>,
}

impl Output {
    pub fn new(json: Value, human: String) -> Output {
        Output {
            json,
            human,
            failure: None,
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error. Credentials in
/// repository URLs and conninfo strings are redacted first
/// ([`hs_repo::redact_text`]): everything a command prints passes here, through
/// [`write_json`] or [`write_stderr`].
fn write_stdout(s: &str) {
    let s = hs_repo::redact_text(s);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|_| out.flush());
}

/// Writes to stderr, redacted as [`write_stdout`].
fn write_stderr(s: &str) {
    let _ = std::io::stderr().write_all(hs_repo::redact_text(s).as_bytes());
}

/// Every string in `v`, redacted with [`hs_repo::redact_text`] (string by
/// string, so the document stays valid JSON).
fn redact_json(v: &mut Value) {
    match v {
        Value::String(s) => {
            let r = hs_repo::redact_text(s);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::Object(m) => m.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// Writes one JSON document on stdout, its strings redacted.
fn write_json(mut doc: Value) {
    redact_json(&mut doc);
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(format!("{doc}\n").as_bytes())
        .and_then(|_| out.flush());
}

/// The log writer (`tracing_subscriber::fmt().with_writer(output::log_writer)`):
/// stderr, each event redacted as [`write_stdout`].
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer writes each event whole, in one call.
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(hs_repo::redact_text(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub fn emit_ok(format: OutputFormat, command: &str, out: Output) -> ExitCode {
    match format {
        OutputFormat::Json => {
            let doc = match &out.failure {
                None => {
                    json!({"schema": SCHEMA, "command": command, "ok": true, "result": out.json})
                }
                Some(err) => json!({
                    "schema": SCHEMA,
                    "command": command,
                    "ok": false,
                    "result": out.json,
                    "error": error_json(err),
                }),
            };
            write_json(doc);
            if let Some(err) = &out.failure {
                return ExitCode::from(err.exit_code());
            }
        }
        OutputFormat::Human => {
            if !out.human.is_empty() {
                write_stdout(&out.human);
                if !out.human.ends_with('\n') {
                    write_stdout("\n");
                }
            }
            if let Some(err) = &out.failure {
                return emit_error(format, command, err);
            }
        }
    }
    ExitCode::SUCCESS
}

fn error_json(err: &CliError) -> Value {
    json!({
        "code": err.code,
        "message": err.message,
        "suggestion": err.suggestion,
        "exit_code": err.exit_code(),
    })
}

pub fn emit_error(format: OutputFormat, command: &str, err: &CliError) -> ExitCode {
    let exit = err.exit_code();
    match format {
        OutputFormat::Json => {
            let doc = json!({
                "schema": SCHEMA,
                "command": command,
                "ok": false,
                "error": error_json(err),
            });
            write_json(doc);
        }
        OutputFormat::Human => {
            let mut s = format!("error[{}]: {}\n", err.code, err.message);
            if let Some(sug) = &err.suggestion {
                s.push_str(&format!("Suggestion: {sug}\n"));
            }
            write_stderr(&s);
        }
    }
    ExitCode::from(exit)
}

/// Reports a command-line parsing error (exit 2, or 202 for `wal fetch` run as
/// `restore_command`), as JSON when `-o json` was given.
pub fn usage_error(e: clap::Error, restore_command: bool) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| (w[0] == "-o" || w[0] == "--output") && w[1] == "json")
        || args.iter().any(|a| a == "--output=json" || a == "-ojson");
    if json {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid arguments");
        let mut err = CliError::new(
            code::USAGE_INVALID_ARGUMENTS,
            first.trim_start_matches("error: "),
        )
        .with_suggestion("run `pg_hardstorage --help` or `pg_hardstorage <command> --help`");
        if restore_command {
            err = err.for_restore_command(false);
        }
        return emit_error(OutputFormat::Json, "", &err);
    }
    // clap quotes the arguments it rejects, a repository URL among them.
    write_stderr(&e.render().to_string());
    let mut err = CliError::new(code::USAGE_INVALID_ARGUMENTS, "");
    if restore_command {
        err = err.for_restore_command(false);
    }
    ExitCode::from(err.exit_code())
}

/// Byte counts as people read them (`1.5 MiB`): the one formatter, shared with doctor.
pub use hs_ops::human_bytes;
