//! Integration tests for hs-ops: the `/metrics` endpoint over real TCP.

mod metrics;
