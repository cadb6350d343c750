//! hs-crypt integration tests: one binary, one module per area.

mod keyring;
mod seal;
mod sign;
mod wrap;
