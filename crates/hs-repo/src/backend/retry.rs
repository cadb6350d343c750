//! A backend wrapper that retries temporary errors with backoff and bounds
//! every operation with a timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hs_base::code;

use super::{Backend, ObjectInfo};
use crate::error::{Error, Result};

/// How [`RetryBackend`] retries and times out.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles per attempt, with full jitter.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
    /// Time limit of one attempt of a small operation.
    pub op_timeout: Duration,
    /// Slowest transfer rate tolerated (bytes per second): an attempt that
    /// moves `n` bytes gets `op_timeout + n / min_rate` seconds.
    pub min_rate: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            op_timeout: Duration::from_secs(60),
            min_rate: 256 * 1024,
        }
    }
}

impl RetryPolicy {
    fn timeout_for(&self, bytes: u64) -> Duration {
        self.op_timeout + Duration::from_secs(bytes / self.min_rate.max(1))
    }

    /// Backoff before attempt `attempt + 1` (attempt counts from 1).
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let jitter: f64 = rand::random();
        cap.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Retries an inner backend's temporary errors ([`Error::is_temporary`]) with
/// exponential backoff and jitter, and bounds each attempt with a timeout
/// (a timeout is `unreachable.storage`, temporary).
///
/// A retried `put_if_absent` may find the object present because an earlier
/// attempt of its own landed (the store wrote it, the answer was lost). It
/// then reads the object back: the same bytes mean the earlier attempt won
/// (`true`); a strict prefix of our bytes is our own torn write and is
/// replaced (`true`); anything else is someone else's object (`false`).
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
}

impl std::fmt::Debug for RetryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBackend")
            .field("location", &self.inner.location())
            .field("policy", &self.policy)
            .finish()
    }
}

impl RetryBackend {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy) -> RetryBackend {
        RetryBackend { inner, policy }
    }

    async fn attempt<T, F>(&self, what: &str, bytes: u64, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let limit = self.policy.timeout_for(bytes);
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                code::UNREACHABLE_STORAGE,
                format!(
                    "{what} on {} timed out after {}s",
                    self.inner.location(),
                    limit.as_secs()
                ),
            )
            .with_suggestion("check the network to the store; the operation was retried")
            .temporary(true)),
        }
    }

    /// Whether to try again after `e` on attempt `n`; sleeps the backoff if so.
    async fn again(&self, e: &Error, n: u32, what: &str) -> bool {
        if !e.is_temporary() || n >= self.policy.max_attempts.max(1) {
            return false;
        }
        let d = self.policy.delay(n);
        tracing::warn!(
            code = e.code(),
            attempt = n,
            delay_ms = d.as_millis() as u64,
            "{what} failed, retrying: {e}"
        );
        tokio::time::sleep(d).await;
        true
    }

    async fn retry<T, F, Fut>(&self, what: &str, bytes: u64, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut n = 1;
        loop {
            match self.attempt(what, bytes, f()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !self.again(&e, n, what).await {
                        return Err(e);
                    }
                }
            }
            n += 1;
        }
    }
}

#[async_trait]
impl Backend for RetryBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn read_window(&self) -> u32 {
        self.inner.read_window()
    }

    async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        let len = data.len() as u64;
        let mut n = 1;
        let mut tried = false;
        loop {
            let step = async {
                let created = self
                    .attempt("put", len, self.inner.put_if_absent(name, data.clone()))
                    .await?;
                if created || !tried {
                    return Ok(created);
                }
                // An earlier attempt of ours may have landed: compare.
                let existing = self.attempt("get", len, self.inner.get(name)).await?;
                if existing == data {
                    return Ok(true);
                }
                if existing.len() < data.len() && data.starts_with(&existing) {
                    tracing::warn!(object = name, "replacing a torn write of our own");
                    self.attempt("put", len, self.inner.put(name, data.clone()))
                        .await?;
                    return Ok(true);
                }
                Ok(false)
            };
            let res = step.await;
            match res {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tried = true;
                    if !self.again(&e, n, "put").await {
                        return Err(e);
                    }
                }
            }
            n += 1;
        }
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.retry("put", len, || self.inner.put(name, data.clone()))
            .await
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        // The size is unknown up front; allow for a whole pack.
        self.retry("get", 16 << 20, || self.inner.get(name)).await
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        self.retry("get", len, || self.inner.get_range(name, offset, len))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // Large listings page through thousands of objects.
        self.retry("list", 256 << 20, || self.inner.list(prefix))
            .await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.retry("delete", 0, || self.inner.delete(name)).await
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectInfo>> {
        self.retry("stat", 0, || self.inner.stat(name)).await
    }

    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than).await
    }
}
