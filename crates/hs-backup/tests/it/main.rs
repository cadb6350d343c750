//! Integration tests for hs-backup against real PostgreSQL clusters (hs-testkit) and a
//! file:// repository: WAL streaming under load, shutdown and resume, gaps, preflight.

mod archive_wait;
mod compression;
mod lease;
mod name_props;
mod preflight;
mod proxy;
mod received;
mod stream;
mod support;
mod sysid;
