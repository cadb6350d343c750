//! Integration tests for hs-api: a real server on 127.0.0.1 answering real HTTP requests,
//! against a real file:// repository and, for backups, a real PostgreSQL cluster.

mod api;
mod backups;
mod support;
