//! hs-base: the base every pg_hardstorage crate stands on.
//!
//! - [`Error`], [`ErrorKind`] and [`Result`]: the one coded error type of every library
//!   crate. An error carries a dotted [`Code`] (its first segment, the namespace, decides
//!   the CLI exit code and the API's HTTP status), a one-line cause (its `Display`), an
//!   optional suggested fix, whether a retry may help, and the error it came from.
//! - [`code`]: every dotted code as a typed constant, so comparing an error's code with a
//!   misspelt one fails to compile: `e.code() == code::NOTFOUND_WAL_SEGMENT`.
//! - [`fs`]: publishing a file atomically (temp file, fsync, rename or link, directory
//!   fsync), the one implementation every crate that writes a file in place uses.
//!
//! Construction is public, so code outside the workspace (a storage backend, say) raises
//! the same errors the workspace does:
//!
//! ```
//! use hs_base::{code, Error};
//! let e = Error::new(code::IO_READ_ONLY, "cannot write x: the file system is read-only")
//!     .with_suggestion("remount the repository's file system read-write");
//! assert_eq!(e.code(), code::IO_READ_ONLY);
//! assert_eq!(e.code().split('.').next(), Some("io"));
//! ```
//!
//! This crate knows nothing about PostgreSQL, keys or repositories; it depends on no other
//! crate of the workspace.

pub mod code;
mod error;
pub mod fs;

pub use code::Code;
pub use error::{io_is_temporary, Error, ErrorKind, Result};
