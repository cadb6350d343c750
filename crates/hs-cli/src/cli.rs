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
    /// Continuous WAL archiving: preflight, stream, fetch, list.
    #[command(subcommand)]
    Wal(WalCommand),
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
            Command::Wal(WalCommand::Preflight(_)) => "wal preflight",
            Command::Wal(WalCommand::Stream(_)) => "wal stream",
            Command::Wal(WalCommand::Fetch(_)) => "wal fetch",
            Command::Wal(WalCommand::List(_)) => "wal list",
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

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetActionArg {
    /// End recovery and accept connections.
    Promote,
    /// Pause recovery at the target.
    Pause,
    /// Shut the server down at the target.
    Shutdown,
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
    /// Replay all archived WAL after the backup (the default when the repository
    /// holds WAL of this deployment): writes recovery.signal and a managed block in
    /// postgresql.auto.conf whose restore_command is `pg_hardstorage wal fetch`.
    #[arg(long, conflicts_with = "no_recovery", group = "pitr_target")]
    pub to_latest: bool,
    /// Recover to a point in time (UTC): RFC 3339, "2026-11-26 14:00[:00]", "now",
    /// "5 minutes ago", "90s ago", "today 14:00", "yesterday 14:00". With `latest`,
    /// the newest backup that ends before it is restored.
    #[arg(long = "to", value_name = "TIME", group = "pitr_target")]
    pub to_time: Option<String>,
    /// Recover up to this WAL position (X/Y, as pg_current_wal_lsn() prints it).
    #[arg(long, value_name = "LSN", group = "pitr_target")]
    pub to_lsn: Option<String>,
    /// Recover up to this restore point (a pg_create_restore_point name).
    #[arg(long, value_name = "NAME", group = "pitr_target")]
    pub to_name: Option<String>,
    /// What the server does at the target: promote (default: it comes up usable),
    /// pause (pg_wal_replay_resume() continues) or shutdown.
    #[arg(long, value_enum, default_value_t = TargetActionArg::Promote)]
    pub to_action: TargetActionArg,
    /// recovery_target_timeline: `latest` (default), `current` or a timeline number.
    #[arg(long, value_name = "TLI")]
    pub to_timeline: Option<String>,
    /// Print the plan (backup chosen, WAL needed, resolved target) and write nothing.
    #[arg(long)]
    pub preview: bool,
    /// Do not configure recovery: the directory starts as of the backup's end.
    #[arg(long, conflicts_with_all = ["to_time", "to_lsn", "to_name"])]
    pub no_recovery: bool,
    /// Keyring path to put in the restore_command, readable by the PostgreSQL
    /// server's OS user [default: the keyring this command uses].
    #[arg(long)]
    pub restore_keyring: Option<PathBuf>,
    /// Directory with PostgreSQL's programs (pg_verifybackup)
    /// [default: /usr/lib/postgresql/<major>/bin, then PATH].
    #[arg(long, env = "PG_HARDSTORAGE_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Check that the server is ready for WAL streaming (exit 4 on fatal findings).
    Preflight(WalPreflightArgs),
    /// Stream WAL from a replication slot into the repository, 24/7.
    Stream(WalStreamArgs),
    /// PostgreSQL's restore_command: fetch one WAL file (`%f`) into a path (`%p`).
    Fetch(WalFetchArgs),
    /// List archived WAL segments per timeline, with any gaps.
    List(WalListArgs),
}

#[derive(Debug, Args)]
pub struct WalPreflightArgs {
    /// Deployment name.
    pub deployment: String,
    /// libpq connection string or URL of a role with the REPLICATION attribute.
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: String,
}

#[derive(Debug, Args)]
pub struct WalStreamArgs {
    /// Deployment name.
    pub deployment: String,
    /// libpq connection string or URL of a role with the REPLICATION attribute.
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: String,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Skip the preflight checks (not recommended).
    #[arg(long)]
    pub skip_preflight: bool,
    /// Stream without a replication slot: the server may recycle WAL before it is archived.
    #[arg(long)]
    pub no_slot: bool,
    /// Seconds between uploads of the in-progress segment
    /// [default: 1 on file://, 10 on object stores].
    #[arg(long)]
    pub partial_interval: Option<f64>,
    /// Report flush only for WAL made durable at once, so the server can use this
    /// stream as a synchronous standby (RPO 0).
    #[arg(long)]
    pub synchronous: bool,
    /// Accept a server whose system identifier differs from the deployment's.
    #[arg(long)]
    pub allow_system_id_change: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9187). Read-only
    /// and unauthenticated: any address is accepted, so prefer loopback or a private network.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// Deployment name.
    pub deployment: String,
    /// WAL file name (`%f`): a segment, `.partial` or `.history` file.
    pub segment: String,
    /// Destination path (`%p`), relative to the current directory.
    pub dest: PathBuf,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Internal: only prefetch the segments after SEGMENT into the spool.
    #[arg(long, hide = true)]
    pub prefetch_only: bool,
    /// Internal: the WAL segment size, for --prefetch-only.
    #[arg(long, hide = true)]
    pub segment_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct WalListArgs {
    /// Deployment name.
    pub deployment: String,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Show only the gaps.
    #[arg(long)]
    pub gaps_only: bool,
}
