//! hs-pitr: see the crate description.
#![deny(missing_docs)]
