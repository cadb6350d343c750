//! hs-chunk: see the crate description.
#![deny(missing_docs)]
