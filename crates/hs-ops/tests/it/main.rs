//! Integration tests for hs-ops: the `/metrics` endpoint over real TCP, and the
//! notification sinks against real HTTP and SMTP servers.

mod metrics;
mod notify;
