//! WAL positions ([`Lsn`]) and timeline ids ([`TimelineId`]) are hs-pg's; this module
//! re-exports them for the protocol code. hs-pg's errors are this crate's [`crate::Error`]
//! (the shared `hs_base::Error`), so they pass through `?` unchanged.

pub use hs_pg::{Lsn, TimelineId};
