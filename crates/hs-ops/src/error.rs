//! The crate's error type is the workspace's one coded error, [`hs_base::Error`]: a dotted
//! code, a cause and a suggested fix. Errors of the crates below pass through unchanged
//! (code, message, suggestion, source).

pub use hs_base::{Error, ErrorKind, Result};
