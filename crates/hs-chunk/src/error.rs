//! The crate's error type is the workspace's one coded error, [`hs_base::Error`]: a dotted
//! code (its first segment decides the CLI exit code), a one-line cause, an optional
//! suggestion, whether a retry could help, and its source. hs-chunk raises
//! [`ErrorKind::InvalidInput`], [`ErrorKind::Corrupt`], [`ErrorKind::TooLarge`] and
//! [`ErrorKind::Internal`].

pub use hs_base::{Error, ErrorKind, Result};
