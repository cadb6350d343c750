//! hs-repo: see the crate description.
#![deny(missing_docs)]
