//! hs-crypt: see the crate description.
#![deny(missing_docs)]
