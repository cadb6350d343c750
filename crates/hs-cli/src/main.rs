//! The `pg_hardstorage` binary.
fn main() {}
