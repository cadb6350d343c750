//! Open a repository, list a deployment's backups, and write one file of the newest backup
//! to stdout: the read path a restore takes, without the restore.
//!
//! ```sh
//! cargo run -p hs-repo --example read_backup -- \
//!     file:///var/backups/pg ~/.config/pg_hardstorage/keyring main PG_VERSION
//! ```
//!
//! The keyring is the file `pg_hardstorage key` manages (it holds the age identity that
//! unwraps the repository's master key). Without a path, only the backups are listed.

use std::io::Write;
use std::path::Path;

use hs_repo::{FileKind, Keyring, Repository};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: read_backup <repo-url> <keyring> <deployment> [path-in-backup]");
        std::process::exit(2);
    }
    if let Err(e) = run(&args[0], &args[1], &args[2], args.get(3)).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(
    url: &str,
    keyring: &str,
    deployment: &str,
    path: Option<&String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let keyring = Keyring::load(Path::new(keyring))?;
    let repo = Repository::open(url, &keyring).await?;

    // Manifests come back verified (signature and seal) and sorted by start time.
    let backups = repo.list_backups(deployment).await?;
    for b in &backups {
        eprintln!(
            "{}  {} .. {}  {} bytes",
            b.backup_id, b.start_lsn, b.stop_lsn, b.stats.logical_bytes
        );
    }
    let (Some(newest), Some(path)) = (backups.last(), path) else {
        return Ok(());
    };

    // A file's content is a list of chunk references; a long file keeps them in list
    // chunks, which `file_chunks` expands. Each chunk is read, decrypted and checked.
    let entry = newest
        .archives
        .iter()
        .flat_map(|a| &a.files)
        .find(|f| &f.path == path && f.kind == FileKind::File)
        .ok_or_else(|| format!("{path}: no such file in backup {}", newest.backup_id))?;
    let reader = repo.reader().await?;
    let mut out = std::io::stdout().lock();
    for chunk in reader.file_chunks(entry).await? {
        out.write_all(&reader.read(&chunk).await?)?;
    }
    out.flush()?;
    Ok(())
}
