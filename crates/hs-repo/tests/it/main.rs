//! Integration tests of hs-repo against real `file://` repositories in temp dirs.

mod backend;
mod catalog;
mod conformance;
mod damage;
mod faults;
mod gc;
mod manifest;
mod props;
mod repack;
mod repo;
mod retention;
mod ssh;
mod support;
mod throughput;
mod url_props;
mod verify;
mod wal;
mod windows;
