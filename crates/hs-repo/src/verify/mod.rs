//! Verification: read a backup, or the whole repository, back from storage and
//! report every problem found (see docs/repository-format.md, "Verification").
//!
//! [`Repository::verify_backup`] checks one backup end to end: the manifest's
//! seal and signature, every chunk (and chunk-list chunk) of every file read
//! back, decrypted and checked against its keyed id, and that the WAL from the
//! backup's start to its stop LSN exists (in the backup's own `pg_wal/` or in
//! the deployment's WAL archive). [`Repository::verify_repo`] checks every
//! object: key objects, packs (whole: hash, header, every frame and chunk),
//! index objects against the pack headers, manifests (signature, chunks
//! indexed) and WAL objects.
//!
//! Both keep going after a problem and return a [`VerifyReport`]; the caller
//! turns a report with problems into an error with
//! [`VerifyReport::to_error`] (the first problem's code, exit 9).

use crate::error::Error;

mod backup;
mod keys;
mod packs;
mod report;
mod repository;
mod wal;

pub use report::{VerifyCheck, VerifyProblem, VerifyReport};

/// At most this many distinct problems (and as many warnings) are kept in a
/// report; further ones are only counted.
pub const MAX_PROBLEMS: usize = 1000;
/// Chunks read per task while verifying a backup.
const CHUNK_BATCH: usize = 256;
/// Tasks reading chunks, packs or WAL objects at the same time.
const PARALLEL: usize = 4;
/// A problem's message names at most this many of the backups it touches (its
/// `backups` field has them all).
const MESSAGE_BACKUPS: usize = 10;

/// The code a failed read of a chunk is reported with.
fn chunk_code(e: &Error) -> &'static str {
    if e.code().starts_with("notfound.") {
        "verify.chunk_missing"
    } else if e.code().starts_with("verify.") {
        "verify.chunk_corrupt"
    } else {
        e.code()
    }
}

fn manifest_name(deployment: &str, backup_id: &str) -> String {
    format!("deployments/{deployment}/backups/{backup_id}")
}

/// The last `/`-separated part of an object name.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
