//! The command-line surface: every command, flag and environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// PostgreSQL backups built on continuous WAL streaming, into a deduplicated,
/// compressed, encrypted repository.
#[derive(Debug, Parser)]
#[command(name = "pg_hardstorage")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The clap command with `--version` / `-V`, whose line is the `version` command's
/// (the build's git commit and time are known only at run time).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    // clap takes a `&'static str` here; the line is made once per process.
    let line: &'static str = Box::leak(crate::commands::version_line().into_boxed_str());
    Cli::command().version(line)
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
    /// Config file [default: the first of ./pg_hardstorage.yaml,
    /// ~/.config/pg_hardstorage/pg_hardstorage.yaml, /etc/pg_hardstorage/pg_hardstorage.yaml].
    #[arg(long, env = "PG_HARDSTORAGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The loaded config file and the resolved keyring (filled in before a command runs).
    #[arg(skip)]
    pub settings: hs_ops::Settings,
    /// Without a terminal, `backup` and `restore` print a progress line on stderr every
    /// SECS seconds (0: none); on a terminal they show a progress bar instead.
    #[arg(
        long,
        value_name = "SECS",
        env = "PG_HARDSTORAGE_PROGRESS_INTERVAL",
        default_value_t = 30,
        global = true
    )]
    pub progress_interval: u64,
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
    /// List a deployment's backups: times, duration, WAL range, sizes, reused share.
    List(ListArgs),
    /// Restore a backup into an empty data directory and verify it.
    Restore(RestoreArgs),
    /// Retention: which backups and WAL a policy keeps; deletes the rest with --apply
    /// (space is freed by `repo gc`).
    Rotate(RotateArgs),
    /// Read a backup back and check it: manifest signature, every chunk, the WAL
    /// to consistency (exit 9 on problems).
    Verify(VerifyBackupArgs),
    /// Repository keys: add a recipient, list, rotate the keyring's identity.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Continuous WAL archiving: preflight, stream, fetch, list.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Set up a deployment: probe PostgreSQL, create the repository and keyring if
    /// absent, write pg_hardstorage.yaml and take the first backup.
    Init(InitArgs),
    /// Check each deployment's health: PostgreSQL, slot, backup and WAL age,
    /// repository, keyring, config (exit 10 with --exit-on-issues).
    Doctor(DoctorArgs),
    /// Show each deployment's last backup, stream position and lag, and repository usage.
    Status(StatusArgs),
    /// Serve the REST API (/v1, /metrics) for the configured deployments.
    Serve(ServeArgs),
}

impl Command {
    /// The command's name as it appears in JSON output.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Version => "version",
            Command::Repo(RepoCommand::Init(_)) => "repo init",
            Command::Repo(RepoCommand::Verify(_)) => "repo verify",
            Command::Repo(RepoCommand::Gc(_)) => "repo gc",
            Command::Rotate(_) => "rotate",
            Command::Verify(_) => "verify",
            Command::Key(KeyCommand::Add(_)) => "key add",
            Command::Key(KeyCommand::List(_)) => "key list",
            Command::Key(KeyCommand::Generate(_)) => "key generate",
            Command::Key(KeyCommand::Rotate(_)) => "key rotate",
            Command::Backup(_) => "backup",
            Command::List(_) => "list",
            Command::Restore(_) => "restore",
            Command::Wal(WalCommand::Preflight(_)) => "wal preflight",
            Command::Wal(WalCommand::Stream(_)) => "wal stream",
            Command::Wal(WalCommand::Fetch(_)) => "wal fetch",
            Command::Wal(WalCommand::List(_)) => "wal list",
            Command::Init(_) => "init",
            Command::Doctor(_) => "doctor",
            Command::Status(_) => "status",
            Command::Serve(_) => "serve",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a new repository at URL (and the local keyring if absent).
    Init(RepoInitArgs),
    /// Check the whole repository: keys, every pack, index, manifests, WAL (exit 9 on problems).
    Verify(RepoVerifyArgs),
    /// Delete packs no backup references, after a grace period; safe while backups
    /// and `wal stream` run. Dry run unless --apply.
    Gc(RepoGcArgs),
}

#[derive(Debug, Args)]
pub struct RepoGcArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Packs younger than this are left alone, and condemned packs are deleted only
    /// this long after a gc run condemned them (e.g. 1h, 30m, 0s).
    #[arg(long, default_value = "1h", value_parser = crate::commands::parse_duration)]
    pub grace: std::time::Duration,
    /// Condemn and delete; without it, only report what would happen.
    #[arg(long)]
    pub apply: bool,
    /// Repack packs that still hold some live chunks while the bytes no backup
    /// references are more than this share of the repository (a percentage, e.g. 5
    /// or 5%; `unlimited` never repacks). Largest unused share first.
    #[arg(long, default_value = "5%", value_name = "PERCENT", value_parser = crate::commands::parse_max_unused)]
    pub max_unused: MaxUnused,
}

/// `repo gc --max-unused`: a percentage, or no repacking at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxUnused(pub Option<f64>);

/// A retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Keep the newest --keep N backups.
    Count,
    /// Keep every backup of the last --within DURATION, plus the newest one before it.
    Within,
    /// Keep the newest backup of each of the last --keep-daily days, --keep-weekly
    /// weeks and --keep-monthly months.
    Gfs,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Deployment name.
    pub deployment: String,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Which backups to keep (the newest backup is always kept).
    #[arg(long, value_enum)]
    pub policy: PolicyArg,
    /// With --policy count: how many backups to keep.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// With --policy within: the window, e.g. 7d, 36h.
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub within: Option<std::time::Duration>,
    /// With --policy gfs: days to keep one backup for.
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// With --policy gfs: ISO weeks to keep one backup for.
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// With --policy gfs: months to keep one backup for.
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// Delete what the plan deletes; without it, only print the plan.
    #[arg(long)]
    pub apply: bool,
}

#[derive(Debug, Args)]
pub struct RepoVerifyArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Quarantine every damaged pack found: new backups stop deduplicating against it
    /// and store fresh copies of its chunks, which older backups then read instead.
    #[arg(long)]
    pub quarantine: bool,
}

#[derive(Debug, Args)]
pub struct VerifyBackupArgs {
    /// Deployment name.
    pub deployment: String,
    /// `latest` or a backup id from `pg_hardstorage list`.
    pub backup: String,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Quarantine every damaged pack found (see `repo verify --quarantine`).
    #[arg(long)]
    pub quarantine: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Wrap the master key for another age recipient (age1...), e.g. a second operator.
    Add(KeyAddArgs),
    /// Write a new keyring (0600) to keep offline for recovery: a fresh age identity and a
    /// copy of this keyring's signing key; prints its recipient for `key add`.
    Generate(KeyGenerateArgs),
    /// List the key objects: recipient, creation time, whether this keyring opens them.
    List(KeyListArgs),
    /// New keyring identity: re-wrap the master key for it, keep the old keyring file,
    /// delete key objects only the old identity opens. Data is not re-encrypted.
    Rotate(KeyRotateArgs),
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// The age recipient to add, `age1...`.
    pub recipient: String,
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Where to write the new keyring; must not exist.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeyListArgs {
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct KeyRotateArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Where to keep the old keyring file [default: <keyring>.old-<UTC timestamp>].
    #[arg(long, value_name = "PATH")]
    pub keep_old: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RepoInitArgs {
    /// Repository URL, e.g. file:///var/lib/pg_hardstorage/repo
    pub url: String,
}

/// The repository a command works on. Empty when neither the flag nor the environment
/// gave one: the command then takes it from pg_hardstorage.yaml (`usage.repo_missing`
/// if that has none either).
#[derive(Debug, Args)]
pub struct RepoArg {
    /// Repository URL, e.g. file:///var/lib/pg_hardstorage/repo
    /// [default: from pg_hardstorage.yaml]
    #[arg(
        long,
        env = "PG_HARDSTORAGE_REPO",
        default_value = "",
        hide_default_value = true
    )]
    pub repo: String,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Deployment name (a-z, 0-9, _): the namespace of this cluster's backups.
    pub deployment: String,
    /// libpq connection string or URL of a role with the REPLICATION attribute
    /// [default: from pg_hardstorage.yaml].
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: Option<String>,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Wait for the next scheduled checkpoint instead of requesting an immediate one.
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// Limit the server's send rate, in kB/s (32..1048576); the server then sends its
    /// archives uncompressed, so the rate bounds what it reads.
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=1_048_576))]
    pub max_rate: Option<u32>,
    /// Accept a server whose system identifier differs from the deployment's.
    #[arg(long)]
    pub allow_system_id_change: bool,
    /// Take a full backup: without it, a PostgreSQL 17+ server with summarize_wal = on
    /// sends only the blocks changed since the deployment's newest backup.
    #[arg(long)]
    pub full: bool,
    /// The deployment is new although its name is close to one the repository or
    /// config knows (without it, such a name is refused as a likely typo).
    #[arg(long)]
    pub new_deployment: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Deployment name.
    pub deployment: String,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Open every backup's manifest instead of reading the deployment's catalog, so that a
    /// manifest damaged in place is shown as damaged (without it, only new manifests and
    /// manifests whose size changed are opened)
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// Check every file's CRC-32C against backup_manifest as it is written, then run
    /// pg_verifybackup --skip-checksums (default).
    Run,
    /// As run, and pg_verifybackup's checksum pass too: every file read back from disk.
    Full,
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
    /// Data directory to create; must be absent or empty (unless --delta).
    #[arg(long)]
    pub target: PathBuf,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Restore over an existing data directory (its server stopped): keep files that
    /// already match the backup, rewrite only chunks that differ, remove the rest.
    #[arg(long)]
    pub delta: bool,
    /// Restore the tablespace at OLDDIR into NEWDIR and point its pg_tblspc link there
    /// (repeatable; like pg_basebackup -T). Unmapped tablespaces go to their original
    /// location, which must be absent or empty.
    #[arg(long, short = 'T', value_name = "OLDDIR=NEWDIR")]
    pub tablespace_mapping: Vec<String>,
    /// Check the result: each file's CRC-32C as it is written, then pg_verifybackup
    /// (`--verify=full` to also read every file back, `--verify=skip` to skip).
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
    /// The OS user the restored server runs as. As root, restore gives it the
    /// restored directories; restore then runs restore_command once as that user
    /// and fails if it could not fetch WAL [default: the data directory's owner].
    #[arg(long, value_name = "USER")]
    pub restore_user: Option<String>,
    /// Before writing anything, read and verify every archived WAL segment
    /// recovery will replay (not only check that it is listed).
    #[arg(long, conflicts_with = "no_recovery")]
    pub verify_wal: bool,
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
    /// libpq connection string or URL of a role with the REPLICATION attribute
    /// [default: from pg_hardstorage.yaml].
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: Option<String>,
}

#[derive(Debug, Args)]
pub struct WalStreamArgs {
    /// Deployment name.
    pub deployment: String,
    /// libpq connection string or URL of a role with the REPLICATION attribute
    /// [default: from pg_hardstorage.yaml].
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: Option<String>,
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

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Without an API token only a loopback address is accepted.
    #[arg(
        long,
        env = "PG_HARDSTORAGE_API_LISTEN",
        default_value = "127.0.0.1:7480"
    )]
    pub listen: std::net::SocketAddr,
    /// Read the bearer token from the first line of this file
    /// [default: the PG_HARDSTORAGE_API_TOKEN environment variable].
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Serve this deployment too (repeatable); the config file's deployments are always served.
    #[arg(long, value_name = "NAME")]
    pub deployment: Vec<String>,
    /// Repository URL for every deployment (else each deployment's config entry, then the
    /// config's top level).
    #[arg(long, env = "PG_HARDSTORAGE_REPO")]
    pub repo: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// libpq connection string or URL of a role with the REPLICATION attribute.
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: Option<String>,
    /// Repository URL; created when absent
    /// [default with --yes: the config's repo, else file:///var/lib/pg_hardstorage/repo].
    #[arg(long, env = "PG_HARDSTORAGE_REPO")]
    pub repo: Option<String>,
    /// Deployment name (a-z, 0-9, _) [default with --yes: main].
    #[arg(long)]
    pub deployment: Option<String>,
    /// Do not ask: take the given values and the defaults.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Do not take the first backup.
    #[arg(long)]
    pub no_backup: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check only this deployment [default: every deployment in the config].
    pub deployment: Option<String>,
    /// libpq connection string [default: from pg_hardstorage.yaml].
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: Option<String>,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Exit with code 10 (`doctor.issues_found`) when any check finds an issue.
    #[arg(long)]
    pub exit_on_issues: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only this deployment [default: every deployment in the config].
    pub deployment: Option<String>,
    /// libpq connection string [default: from pg_hardstorage.yaml].
    #[arg(long, env = "PG_HARDSTORAGE_PG_CONNECTION")]
    pub pg_connection: Option<String>,
    #[command(flatten)]
    pub repo: RepoArg,
}
