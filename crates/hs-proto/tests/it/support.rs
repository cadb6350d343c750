//! Shared setup of the hs-proto integration tests.

use hs_proto::{ConnConfig, Lsn};
use hs_testkit::PgCluster;

/// Test result: `?` works on hs-proto, io and serde errors alike.
pub type R = Result<(), Box<dyn std::error::Error>>;

pub fn cfg(s: &str) -> ConnConfig {
    // No environment: tests must not depend on PG* variables of the machine.
    ConnConfig::parse_with_env(s, &|_| None).expect("valid conninfo")
}

/// Runs blocking testkit calls (psql) without stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The `restart_lsn` of replication slot `slot`; `None` when there is no such slot.
pub fn slot_restart_lsn(
    pg: &PgCluster,
    slot: &str,
) -> Result<Option<Lsn>, Box<dyn std::error::Error>> {
    let v = blocking(|| {
        pg.psql(&format!(
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
    })?;
    if v.is_empty() {
        return Ok(None);
    }
    Ok(Some(v.parse::<Lsn>()?))
}
