//! hs-testkit: see the crate description.
#![deny(missing_docs)]
