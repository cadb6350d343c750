//! `pg_hardstorage __generate-docs DIR` (internal): man pages and shell completions
//! generated from the clap definition itself, so they can never drift from the binary.
//! `cargo xtask dist` runs it and packages the result. It is not a clap subcommand (main
//! dispatches it before parsing), so the completions it writes never offer it.
//!
//! Writes `DIR/man/pg_hardstorage.1` plus one page per (nested) visible subcommand
//! (`pg_hardstorage-wal-stream.1`, ...), and `DIR/completions/` with `pg_hardstorage.bash`,
//! `_pg_hardstorage` (zsh) and `pg_hardstorage.fish`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hs_base::code;
use serde_json::json;

use crate::cli::OutputFormat;
use crate::errors::CliError;
use crate::output::{self, Output};

/// The binary's name, as users type it and as the generated files are named.
const BIN: &str = "pg_hardstorage";

/// The internal command's name (the binary's first argument).
pub const COMMAND: &str = "__generate-docs";

/// `pg_hardstorage __generate-docs DIR`: exactly one argument, the output directory.
pub fn main(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    let [dir] = args else {
        let err = CliError::new(
            code::USAGE_INVALID_ARGUMENTS,
            format!("usage: {BIN} {COMMAND} DIR (an output directory; internal, for packaging)"),
        );
        return output::emit_error(OutputFormat::Human, COMMAND, &err);
    };
    match generate(Path::new(dir)) {
        Ok(out) => output::emit_ok(OutputFormat::Human, COMMAND, out),
        Err(e) => output::emit_error(OutputFormat::Human, COMMAND, &crate::errors::classify(&e)),
    }
}

pub fn generate(dir: &Path) -> Result<Output> {
    let man_dir = dir.join("man");
    let comp_dir = dir.join("completions");
    for d in [&man_dir, &comp_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut cmd = crate::cli::command()
        .bin_name(BIN)
        .disable_help_subcommand(true);
    cmd.build();

    let mut pages = Vec::new();
    write_man_pages(&cmd, BIN, &man_dir, &mut pages)?;

    let mut completions = Vec::new();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let path = clap_complete::generate_to(shell, &mut cmd, BIN, &comp_dir)
            .with_context(|| format!("cannot write the {shell} completion"))?;
        completions.push(path);
    }

    let show =
        |v: &[PathBuf]| -> Vec<String> { v.iter().map(|p| p.display().to_string()).collect() };
    let human = format!(
        "Wrote {} man pages to {} and {} completion scripts to {}\n",
        pages.len(),
        man_dir.display(),
        completions.len(),
        comp_dir.display()
    );
    Ok(Output::new(
        json!({"man_pages": show(&pages), "completions": show(&completions)}),
        human,
    ))
}

/// One page for `cmd` (named `name`) and, recursively, one per visible subcommand.
fn write_man_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let page = cmd.clone().display_name(name.to_owned());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .with_context(|| format!("cannot render the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        write_man_pages(sub, &sub_name, dir, out)?;
    }
    Ok(())
}
