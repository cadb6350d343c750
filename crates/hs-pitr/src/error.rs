//! The crate's error type is the workspace's one coded error, [`hs_base::Error`]: a dotted
//! code, a cause and a suggested fix. Repository errors pass through unchanged; `wal fetch`
//! marks the one failure `restore_command` may report as "not in the archive" with
//! [`ErrorKind::Absent`] ([`Error::is_absent`]).

pub use hs_base::{Error, ErrorKind, Result};

use hs_base::code;

/// Writing `what` on the restore target failed.
pub(crate) fn io(what: String, e: std::io::Error) -> Error {
    Error::of_kind(
        ErrorKind::Io,
        code::IO_RESTORE_WRITE_FAILED,
        format!("{what}: {e}"),
    )
    .with_suggestion("check free space and permissions on the restore target")
    .with_source(e)
}

/// A restore task (a unit's write, a file's sync, a delta comparison) that panicked or
/// was cancelled: the restore stops, and nothing it wrote is presented as restored.
pub(crate) fn task_failed(what: &str, e: tokio::task::JoinError) -> Error {
    Error::of_kind(
        ErrorKind::Io,
        code::IO_RESTORE_TASK_FAILED,
        format!("restore {what} task failed: {e}"),
    )
    .with_suggestion(
        "do not start this directory; restore again (--delta keeps what was written), and \
         report this if it repeats",
    )
}

/// `e` (a `notfound.wal_segment` for the very file asked for) as absence. Only
/// [`crate::wal_fetch`] says so: every other failure, even another `notfound.*`
/// (repository, keyring), is not absence, and a `restore_command` must then make
/// PostgreSQL stop recovery instead of ending it (docs/exit-codes.md, "wal fetch").
pub(crate) fn absent(e: Error) -> Error {
    e.with_kind(ErrorKind::Absent)
}
