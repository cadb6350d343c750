//! hs-testkit self-tests: real clusters, started and queried the way the other crates will.

mod cluster;
