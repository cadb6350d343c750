//! The `pg_hardstorage` binary: argument parsing, output and exit codes. Each command
//! is a clap struct plus one library call; the logic lives in the library crates.

mod alloc;
mod cli;
mod commands;
mod errors;
mod output;
mod progress;

use std::process::ExitCode;

use clap::FromArgMatches;
use hs_base::code;

use crate::cli::Cli;
use crate::errors::CliError;

fn main() -> ExitCode {
    alloc::configure();
    // Packaging's internal `__generate-docs DIR` is handled before clap, so that the
    // generated completions and man pages cannot offer it.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == commands::gendocs::COMMAND) {
        return commands::gendocs::main(&args[2..]);
    }
    // `wal fetch` is PostgreSQL's restore_command: every way it can fail other
    // than "not in the repository" must stop recovery (errors::for_restore_command).
    let restore_command = errors::is_restore_command(&args);
    if restore_command {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::exit(i32::from(errors::RESTORE_COMMAND_FATAL_BASE + 1));
        }));
    }
    // `--version` / `-V` print the same line as the `version` command.
    let parsed = cli::command()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return output::usage_error(e, restore_command),
    };
    // Long-running processes (the streamer, the API server) log what they do by default.
    let base = u8::from(matches!(
        cli.command,
        cli::Command::Wal(cli::WalCommand::Stream(_)) | cli::Command::Serve(_)
    ));
    init_tracing(cli.global.verbose.max(base));
    let format = cli.global.output;
    let command = cli.command.name();
    // The streamer runs on one thread: under a write load the server sends thousands of
    // small WAL messages a second, and on the multi-threaded runtime each one woke the
    // main thread from a worker that had polled the socket (two context switches per
    // message, most of the streamer's CPU). Compression, sealing and storage still run
    // on tokio's blocking pool.
    let mut builder = if matches!(cli.command, cli::Command::Wal(cli::WalCommand::Stream(_))) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let mut err = CliError::new(
                code::IO_RUNTIME_FAILED,
                format!("cannot start the runtime: {e}"),
            );
            if restore_command {
                err = err.for_restore_command(false);
            }
            return output::emit_error(format, command, &err);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    match result {
        Ok(out) => output::emit_ok(format, command, out),
        Err(e) => {
            let mut err = errors::classify(&e);
            if restore_command {
                err = err.for_restore_command(errors::is_absent(&e));
            }
            output::emit_error(format, command, &err)
        }
    }
}

/// Colour in log lines only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn log_colours() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PG_HARDSTORAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::log_writer)
        .with_target(false)
        .with_ansi(log_colours())
        .try_init();
}
