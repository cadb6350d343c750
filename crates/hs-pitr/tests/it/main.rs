//! Integration tests of hs-pitr's WAL fetch and restore planning against real `file://`
//! repositories.

mod moved_on;
mod plan;
mod restore_checks;
mod support;
mod target_props;
mod wal;
