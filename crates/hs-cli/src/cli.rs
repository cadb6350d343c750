//! The command-line surface: every command, flag and environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// PostgreSQL backups built on continuous WAL streaming, into a deduplicated,
/// compressed, encrypted repository.
#[derive(Debug, Parser)]
#[command(name = "pg_hardstorage", disable_version_flag = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Output format: human-readable text or one JSON document on stdout.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Human, global = true)]
    pub output: OutputFormat,
    /// The local keyring holding the key that unlocks the repository
    /// [default: ~/.config/pg_hardstorage/keyring].
    #[arg(long, env = "PG_HARDSTORAGE_KEYRING", global = true)]
    pub keyring: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version, git commit and build time.
    Version,
    /// Repository management.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Take a base backup of a deployment into the repository.
    Backup(BackupArgs),
    /// List a deployment's backups with sizes and dedup ratio.
    List(ListArgs),
    /// Restore a backup into an empty data directory and verify it.
    Restore(RestoreArgs),
}

impl Command {
    /// The command's name as it appears in JSON output.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Version => "version",
            Command::Repo(RepoCommand::Init(_)) => "repo init",
            Command::Backup(_) => "backup",
            Command::List(_) => "list",
            Command::Restore(_) => "restore",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a new repository at URL (and the local keyring if absent).
    Init(RepoInitArgs),
}

#[derive(Debug, Args)]
pub struct RepoInitArgs {
    /// Repository URL, e.g. file:///var/lib/pg_hardstorage/repo
    pub url: String,
}

/// The repository a command works on.
#[derive(Debug, Args)]
pub struct RepoArg {
    /// Repository URL, e.g. file:///var/lib/pg_hardstorage/repo
    #[arg(long, env = "PG_HARDSTORAGE_REPO")]
    pub repo: String,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Deployment name (a-z, 0-9, _): the namespace of this cluster's backups.
    pub deployment: String,
    /// libpq connection string or URL of a role with the REPLICATION attribute.
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: String,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Wait for the next scheduled checkpoint instead of requesting an immediate one.
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// Limit the server's send rate, in kB/s (32..1048576).
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=1_048_576))]
    pub max_rate: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Deployment name.
    pub deployment: String,
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// Run pg_verifybackup on the restored directory (default).
    Run,
    /// Do not verify.
    Skip,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Deployment name.
    pub deployment: String,
    /// `latest` or a backup id from `pg_hardstorage list`.
    pub backup: String,
    /// Data directory to create; must be absent or empty.
    #[arg(long)]
    pub target: PathBuf,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Check the result with pg_verifybackup (`--verify=skip` to skip).
    #[arg(long, value_enum, default_value_t = VerifyArg::Run)]
    pub verify: VerifyArg,
    /// Directory with PostgreSQL's programs (pg_verifybackup)
    /// [default: /usr/lib/postgresql/<major>/bin, then PATH].
    #[arg(long, env = "PG_HARDSTORAGE_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}
