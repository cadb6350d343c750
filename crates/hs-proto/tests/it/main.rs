//! Integration tests for hs-proto against real PostgreSQL 15 clusters (via hs-testkit).

mod client;
mod parser_props;
mod support;
mod wal_stream;
mod waldecode;
