//! A fault-injecting backend wrapper for tests and reliability runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hs_base::code;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Backend, ObjectInfo};
use crate::error::{Error, Result};

/// Probabilities (0.0 to 1.0, per operation) of each injected fault.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// Seed of the fault sequence (the same seed and call order give the same faults).
    pub seed: u64,
    /// A temporary error (`io.storage_unavailable`) instead of the operation.
    pub temporary_error: f64,
    /// A permanent error (`io.storage_failed`) instead of the operation.
    pub permanent_error: f64,
    /// A delay of [`latency`](FaultConfig::latency) before the operation.
    pub latency_spike: f64,
    /// Length of a latency spike.
    pub latency: Duration,
    /// Writes only: the object is stored truncated to a random length, then a
    /// temporary error is returned.
    pub torn_write: f64,
    /// Writes only: the object is stored whole, then a temporary error is
    /// returned (the acknowledgement was lost).
    pub error_after_write: f64,
    /// Writes only: `io.no_space` instead of the write.
    pub disk_full: f64,
}

/// What a [`FaultBackend`] injected so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Operations passed to the wrapper.
    pub operations: u64,
    /// Temporary errors injected.
    pub temporary_errors: u64,
    /// Permanent errors injected.
    pub permanent_errors: u64,
    /// Latency spikes injected.
    pub latency_spikes: u64,
    /// Torn writes injected.
    pub torn_writes: u64,
    /// Writes that landed but reported an error.
    pub errors_after_write: u64,
    /// "Disk full" errors injected.
    pub disk_full: u64,
}

#[derive(Default)]
struct Counters {
    operations: AtomicU64,
    temporary_errors: AtomicU64,
    permanent_errors: AtomicU64,
    latency_spikes: AtomicU64,
    torn_writes: AtomicU64,
    errors_after_write: AtomicU64,
    disk_full: AtomicU64,
}

/// Wraps a backend and injects faults drawn from a seeded generator: temporary
/// and permanent errors, latency spikes, torn writes, writes whose
/// acknowledgement is lost, and "disk full". [`FaultBackend::counts`] tells
/// what was injected. Faults can be switched off and on at run time with
/// [`FaultBackend::set_enabled`], e.g. to read a repository back cleanly.
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    config: FaultConfig,
    rng: Mutex<StdRng>,
    enabled: std::sync::atomic::AtomicBool,
    counters: Counters,
}

impl std::fmt::Debug for FaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultBackend")
            .field("location", &self.inner.location())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A draw with probability `p` (clamped to 0..=1; not a number counts as 0).
fn roll(rng: &mut StdRng, p: f64) -> bool {
    let p = if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    };
    rng.gen_bool(p)
}

enum Fault {
    None,
    Temporary,
    Permanent,
    Torn(usize),
    AfterWrite,
    DiskFull,
}

impl FaultBackend {
    /// Wraps `inner`; faults are enabled.
    pub fn new(inner: Arc<dyn Backend>, config: FaultConfig) -> FaultBackend {
        FaultBackend {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            config,
            enabled: std::sync::atomic::AtomicBool::new(true),
            counters: Counters::default(),
        }
    }

    /// Turns fault injection on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// What was injected so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        FaultCounts {
            operations: l(&c.operations),
            temporary_errors: l(&c.temporary_errors),
            permanent_errors: l(&c.permanent_errors),
            latency_spikes: l(&c.latency_spikes),
            torn_writes: l(&c.torn_writes),
            errors_after_write: l(&c.errors_after_write),
            disk_full: l(&c.disk_full),
        }
    }

    /// Draws this operation's fault (and latency) from the generator.
    async fn draw(&self, write_len: Option<usize>) -> Fault {
        self.counters.operations.fetch_add(1, Ordering::SeqCst);
        if !self.enabled.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let c = &self.config;
        let (spike, fault) = {
            let mut rng = match self.rng.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let rng = &mut *rng;
            let spike = roll(rng, c.latency_spike);
            let fault = if roll(rng, c.temporary_error) {
                Fault::Temporary
            } else if roll(rng, c.permanent_error) {
                Fault::Permanent
            } else if let Some(len) = write_len {
                if roll(rng, c.torn_write) {
                    let keep = if len == 0 { 0 } else { rng.gen_range(0..len) };
                    Fault::Torn(keep)
                } else if roll(rng, c.error_after_write) {
                    Fault::AfterWrite
                } else if roll(rng, c.disk_full) {
                    Fault::DiskFull
                } else {
                    Fault::None
                }
            } else {
                Fault::None
            };
            (spike, fault)
        };
        if spike {
            self.counters.latency_spikes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(c.latency).await;
        }
        fault
    }

    /// An injected error on `what`, counted: temporary (`io.storage_unavailable`,
    /// worth a retry) or permanent (`io.storage_failed`).
    fn injected(&self, temporary: bool, what: &str) -> Error {
        let (counter, code, kind) = if temporary {
            (
                &self.counters.temporary_errors,
                code::IO_STORAGE_UNAVAILABLE,
                "temporary",
            )
        } else {
            (
                &self.counters.permanent_errors,
                code::IO_STORAGE_FAILED,
                "permanent",
            )
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Error::new(code, format!("injected {kind} fault on {what}")).temporary(temporary)
    }

    /// Applies a read-side fault (no write involved).
    async fn read_fault(&self, what: &str) -> Result<()> {
        match self.draw(None).await {
            Fault::Temporary => Err(self.injected(true, what)),
            Fault::Permanent => Err(self.injected(false, what)),
            _ => Ok(()),
        }
    }

    /// Runs a write with a drawn fault; `replace` selects put over put_if_absent.
    async fn write(&self, name: &str, data: Bytes, replace: bool) -> Result<bool> {
        let fault = self.draw(Some(data.len())).await;
        let land = |d: Bytes| async move {
            if replace {
                self.inner.put(name, d).await.map(|()| true)
            } else {
                self.inner.put_if_absent(name, d).await
            }
        };
        match fault {
            Fault::None => land(data).await,
            Fault::Temporary => Err(self.injected(true, name)),
            Fault::Permanent => Err(self.injected(false, name)),
            Fault::DiskFull => {
                self.counters.disk_full.fetch_add(1, Ordering::SeqCst);
                Err(Error::io(
                    std::io::Error::new(std::io::ErrorKind::StorageFull, "injected disk full"),
                    true,
                    name,
                ))
            }
            Fault::Torn(keep) => {
                self.counters.torn_writes.fetch_add(1, Ordering::SeqCst);
                land(data.slice(..keep)).await?;
                Err(self.injected(true, name))
            }
            Fault::AfterWrite => {
                self.counters
                    .errors_after_write
                    .fetch_add(1, Ordering::SeqCst);
                land(data).await?;
                Err(self.injected(true, name))
            }
        }
    }
}

#[async_trait]
impl Backend for FaultBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn read_window(&self) -> u32 {
        self.inner.read_window()
    }

    async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        self.write(name, data, false).await
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        self.write(name, data, true).await.map(|_| ())
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        self.read_fault(name).await?;
        self.inner.get(name).await
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        self.read_fault(name).await?;
        self.inner.get_range(name, offset, len).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.read_fault(prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.read_fault(name).await?;
        self.inner.delete(name).await
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectInfo>> {
        self.read_fault(name).await?;
        self.inner.stat(name).await
    }

    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than).await
    }
}
