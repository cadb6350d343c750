//! End-to-end tests of the `pg_hardstorage` binary against real PostgreSQL clusters
//! and real file:// repositories. One test binary; modules by topic.

mod backup_restore;
mod pitr;
mod support;
mod wal_stream;
