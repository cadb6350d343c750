//! Leases: `locks/<id>` objects that tell garbage collection who is using the
//! repository (see docs/repository-format.md, "Locks and garbage collection").
//!
//! A lease is a small sealed record (holder host, pid, command, kind, created,
//! expires) written when a process starts work and refreshed by a background
//! task while it is held; releasing it deletes the object. A holder that dies
//! stops refreshing, and once `expires` has passed everyone ignores the lease
//! (garbage collection also removes it).
//!
//! - **shared** leases are held by writers (`backup`, `wal stream`); any
//!   number may be live at once. A shared lease with `packs = true` says "I
//!   may reference chunks that are already in the repository": garbage
//!   collection waits for every such lease that was live when it condemned a
//!   pack before deleting that pack.
//! - an **exclusive** lease is held by maintenance (`repo gc`, `rotate
//!   --apply`); at most one is live at a time (a second one fails with
//!   `conflict.repo_locked`). It does not block shared leases: the garbage
//!   collection protocol is safe with concurrent writers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hs_base::code;
use hs_crypt::Domain;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// Prefix of lease objects.
pub(crate) const LOCKS_PREFIX: &str = "locks/";
/// Default lifetime of a lease that is not refreshed (15 minutes).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);
const RECORD_VERSION: u8 = 1;

/// Whether other holders may hold a lease at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    /// Writers (`backup`, `wal stream`): any number at once.
    Shared,
    /// Maintenance (`repo gc`, `rotate --apply`): at most one at a time.
    Exclusive,
}

/// What a lease object says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Random id, also the object name `locks/<id>`.
    pub id: String,
    /// Shared or exclusive.
    pub kind: LeaseKind,
    /// Whether the holder may reference chunks already in the repository
    /// (a backup); garbage collection waits for such leases.
    pub packs: bool,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// What the holder is doing, e.g. `backup db1`.
    pub command: String,
    /// When the lease was acquired (Unix seconds, holder's clock).
    pub created: i64,
    /// When the lease lapses unless refreshed (Unix seconds, holder's clock).
    pub expires: i64,
}

impl LeaseInfo {
    /// Whether the lease is still live at `now` (Unix seconds).
    pub fn is_live(&self, now: i64) -> bool {
        self.expires > now
    }
}

/// How to acquire a lease.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// Lifetime without a refresh; the lease is refreshed every quarter of it.
    pub ttl: Duration,
    /// See [`LeaseInfo::packs`].
    pub packs: bool,
}

impl LeaseOptions {
    /// A lease that protects the packs its holder deduplicates against
    /// (a backup), with the default TTL.
    pub fn backup() -> LeaseOptions {
        LeaseOptions {
            ttl: DEFAULT_LEASE_TTL,
            packs: true,
        }
    }

    /// A lease that only announces the holder (`wal stream`, maintenance).
    pub fn announce() -> LeaseOptions {
        LeaseOptions {
            ttl: DEFAULT_LEASE_TTL,
            packs: false,
        }
    }
}

pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Seals a small JSON record bound to its object name (leases and gc records
/// share the `index` sealing domain; the magic and the name keep them apart
/// from index objects and from each other).
pub(crate) fn seal_record(
    repo: &Repository,
    magic: &[u8; 8],
    name: &str,
    json: &[u8],
) -> Result<Vec<u8>> {
    let n = u16::try_from(name.len()).map_err(|_| {
        Error::new(
            code::USAGE_INVALID_OBJECT_NAME,
            format!("object name {name:?} is too long"),
        )
    })?;
    let mut plain = Vec::with_capacity(11 + name.len() + json.len());
    plain.extend_from_slice(magic);
    plain.push(RECORD_VERSION);
    plain.extend_from_slice(&n.to_le_bytes());
    plain.extend_from_slice(name.as_bytes());
    plain.extend_from_slice(json);
    Ok(repo.inner.master.seal(Domain::Index, &plain))
}

/// Opens a record sealed by [`seal_record`]; `code` names what is invalid.
pub(crate) fn open_record(
    repo: &Repository,
    magic: &[u8; 8],
    name: &str,
    sealed: &[u8],
    code: &'static str,
) -> Result<Vec<u8>> {
    let plain = repo.inner.master.open(Domain::Index, sealed)?;
    let bad = |what: &str| {
        Error::new(code, format!("object {name} {what}"))
            .with_suggestion("the object is damaged or was moved; delete it if it is stale")
    };
    if plain.len() < 11 || &plain[..8] != magic || plain[8] != RECORD_VERSION {
        return Err(bad("has an unknown layout"));
    }
    let n = usize::from(u16::from_le_bytes([plain[9], plain[10]]));
    let rest = &plain[11..];
    if rest.len() < n || &rest[..n] != name.as_bytes() {
        return Err(bad("was stored under another name"));
    }
    Ok(rest[n..].to_vec())
}

const LEASE_MAGIC: &[u8; 8] = b"HSLEASE1";

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

struct LeaseState {
    /// Until when (Unix seconds, our clock) the last successful write keeps
    /// the lease valid.
    valid_until: AtomicI64,
}

/// A held lease. Refreshed in the background until [`release`](Lease::release)
/// or drop (which also removes the object, best effort).
pub struct Lease {
    repo: Repository,
    info: LeaseInfo,
    ttl: Duration,
    state: Arc<LeaseState>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("info", &self.info).finish()
    }
}

fn lease_name(id: &str) -> String {
    format!("{LOCKS_PREFIX}{id}")
}

async fn write_lease(repo: &Repository, info: &LeaseInfo) -> Result<()> {
    let name = lease_name(&info.id);
    let json = serde_json::to_vec(info).map_err(|e| {
        Error::new(code::IO_ENCODE_FAILED, "could not encode a lease").with_source(e)
    })?;
    let sealed = seal_record(repo, LEASE_MAGIC, &name, &json)?;
    repo.inner.backend.put(&name, Bytes::from(sealed)).await
}

impl Repository {
    /// Acquires a lease for `command` (e.g. `backup db1`). An exclusive lease
    /// fails with `conflict.repo_locked` while another live exclusive lease
    /// exists. Keep the returned [`Lease`] alive while working.
    pub async fn acquire_lease(
        &self,
        kind: LeaseKind,
        command: &str,
        opts: &LeaseOptions,
    ) -> Result<Lease> {
        let ttl = opts.ttl.max(Duration::from_secs(1));
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4);
        let mut rid = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut rid);
        let now = now_unix();
        let info = LeaseInfo {
            id: hex::encode(rid),
            kind,
            packs: opts.packs,
            host: host_name(),
            pid: std::process::id(),
            command: command.to_string(),
            created: now,
            expires: now.saturating_add(ttl_secs),
        };
        write_lease(self, &info).await?;
        let state = Arc::new(LeaseState {
            valid_until: AtomicI64::new(info.expires),
        });
        let mut lease = Lease {
            repo: self.clone(),
            info,
            ttl,
            state,
            refresher: None,
            released: false,
        };
        if kind == LeaseKind::Exclusive {
            // Written first, then listed: of two racing holders at least one
            // sees the other (both may fail; a retry sorts it out).
            let now = now_unix();
            let other = self.list_leases().await?.into_iter().find(|l| {
                l.kind == LeaseKind::Exclusive && l.id != lease.info.id && l.is_live(now)
            });
            if let Some(o) = other {
                let _ = lease.release_inner().await;
                return Err(Error::new(
                    code::CONFLICT_REPO_LOCKED,
                    format!(
                        "the repository is locked by `{}` (pid {} on {}, lease {})",
                        o.command, o.pid, o.host, o.id
                    ),
                )
                .with_suggestion(
                    "wait for it to finish; a lease of a dead process lapses when it expires",
                ));
            }
        }
        lease.refresher = Some(tokio::spawn(refresh_loop(
            self.clone(),
            lease.info.clone(),
            ttl,
            lease.state.clone(),
        )));
        Ok(lease)
    }

    /// Every lease object that opens, live or expired (objects that do not
    /// open are skipped with a warning: a damaged lease must not stop a backup).
    pub async fn list_leases(&self) -> Result<Vec<LeaseInfo>> {
        let mut out = Vec::new();
        for o in self.inner.backend.list(LOCKS_PREFIX).await? {
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue; // released meanwhile
            };
            let parsed = open_record(self, LEASE_MAGIC, &o.name, &sealed, "verify.lease_invalid")
                .and_then(|json| {
                    serde_json::from_slice::<LeaseInfo>(&json).map_err(|e| {
                        Error::new(
                            code::VERIFY_LEASE_INVALID,
                            format!("lease {} is not valid JSON", o.name),
                        )
                        .with_source(e)
                    })
                });
            match parsed {
                Ok(l) if lease_name(&l.id) == o.name => out.push(l),
                Ok(_) => tracing::warn!(object = %o.name, "lease names another id; ignored"),
                Err(e) => tracing::warn!(object = %o.name, error = %e, "unreadable lease ignored"),
            }
        }
        Ok(out)
    }

    /// Removes lease objects that expired before `now` (Unix seconds).
    /// Returns how many were removed.
    pub(crate) async fn remove_expired_leases(&self, now: i64) -> Result<usize> {
        let mut n = 0;
        for l in self.list_leases().await? {
            if !l.is_live(now) {
                self.inner.backend.delete(&lease_name(&l.id)).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

async fn refresh_loop(
    repo: Repository,
    mut info: LeaseInfo,
    ttl: Duration,
    state: Arc<LeaseState>,
) {
    let every = (ttl / 4).max(Duration::from_millis(250));
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4);
    loop {
        tokio::time::sleep(every).await;
        let now = now_unix();
        info.expires = now.saturating_add(ttl_secs);
        match write_lease(&repo, &info).await {
            Ok(()) => state.valid_until.store(info.expires, Ordering::SeqCst),
            Err(e) => tracing::warn!(
                lease = %info.id,
                error = %e,
                "refreshing the repository lease failed; will retry"
            ),
        }
    }
}

impl Lease {
    /// What the lease object says.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// Fails with `aborted.lease_lost` unless the lease is valid for at least
    /// another quarter of its TTL. A backup calls this right before writing
    /// its manifest: once the lease may have lapsed, garbage collection may
    /// have deleted packs the backup deduplicated against.
    pub fn check(&self) -> Result<()> {
        let margin = i64::try_from((self.ttl / 4).as_secs()).unwrap_or(0);
        let until = self.state.valid_until.load(Ordering::SeqCst);
        if until - margin > now_unix() {
            Ok(())
        } else {
            Err(Error::new(
                code::ABORTED_LEASE_LOST,
                format!(
                    "the repository lease {} could not be refreshed in time",
                    self.info.id
                ),
            )
            .with_suggestion("check the connection to the repository and run the backup again"))
        }
    }

    async fn release_inner(&mut self) -> Result<()> {
        self.released = true;
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        self.repo
            .inner
            .backend
            .delete(&lease_name(&self.info.id))
            .await
    }

    /// Stops refreshing and deletes the lease object.
    pub async fn release(mut self) -> Result<()> {
        self.release_inner().await
    }

    /// Stops refreshing but leaves the object behind, as a holder that died
    /// would; it lapses at its `expires`. For tests of crash behaviour.
    pub fn leak(mut self) {
        self.released = true;
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        if !self.released {
            let backend = self.repo.inner.backend.clone();
            let name = lease_name(&self.info.id);
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = backend.delete(&name).await;
                });
            }
        }
    }
}
