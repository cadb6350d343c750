//! The crate's error type is the workspace's one coded error, [`hs_base::Error`]: a dotted
//! code (its first segment decides the CLI exit code), a one-line cause, an optional
//! suggestion, whether a retry could help, and its source. Errors of hs-chunk and
//! hs-crypt are the same type and pass through unchanged. A storage [`Backend`] outside
//! this crate raises them with the public constructors: [`Error::new`], [`Error::io`]
//! (an I/O error on an object, classified), [`Error::temporary`].
//!
//! [`Backend`]: crate::Backend

pub use hs_base::{Error, ErrorKind, Result};
