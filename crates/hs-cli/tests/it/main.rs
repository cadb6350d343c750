//! End-to-end tests of the `pg_hardstorage` binary against real PostgreSQL clusters
//! and real file:// repositories. One test binary; modules by topic.

mod backends;
mod backup_restore;
mod backup_signals;
mod backup_sysid;
mod bad_input;
mod crash;
mod damage_reports;
mod deployment_names;
mod format_v1;
mod fuzz_corpus;
mod gendocs;
mod incremental;
mod keyring_recovery;
mod list_columns;
mod logs;
mod multi_host;
mod ops;
mod pitr;
mod pitr_timeline;
mod preflight;
mod progress;
mod recovery_stops;
mod redaction;
mod restore_delta;
mod restore_signals;
mod restore_space;
mod retention;
mod secrets;
mod ssh_backends;
mod standby_source;
mod support;
mod tablespaces;
mod verify;
mod wal_list;
mod wal_stream;
