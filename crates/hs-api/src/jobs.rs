//! Background jobs (backups, verifies) started by POST requests and polled with
//! `GET /v1/jobs/{id}`. Jobs live in memory: a restart of the server forgets them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hs_base::code;
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, HttpError, Result};

/// Finished jobs kept for polling; older ones are forgotten first.
const KEEP_FINISHED: usize = 200;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
}

/// Progress counters a running job updates (through [`hs_backup::Progress`]).
#[derive(Debug, Default)]
pub(crate) struct JobProgress {
    total: AtomicU64,
    done: AtomicU64,
    logical: AtomicU64,
    new: AtomicU64,
}

impl hs_backup::Progress for JobProgress {
    fn start(&self, total: Option<u64>) {
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn dedup(&self, logical: u64, new: u64) {
        self.logical.store(logical, Ordering::Relaxed);
        self.new.store(new, Ordering::Relaxed);
    }
}

struct Job {
    id: String,
    kind: &'static str,
    deployment: String,
    backup_id: Option<String>,
    status: JobStatus,
    created_at: String,
    finished_at: Option<String>,
    progress: Arc<JobProgress>,
    result: Option<Value>,
    error: Option<Value>,
}

impl Job {
    fn to_json(&self) -> Value {
        let p = &self.progress;
        let total = p.total.load(Ordering::Relaxed);
        json!({
            "id": self.id,
            "kind": self.kind,
            "deployment": self.deployment,
            "backup_id": self.backup_id,
            "status": self.status.as_str(),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "progress": {
                "bytes_done": p.done.load(Ordering::Relaxed),
                "bytes_total": if total == 0 { None } else { Some(total) },
                "logical_bytes": p.logical.load(Ordering::Relaxed),
                "new_bytes": p.new.load(Ordering::Relaxed),
            },
            "result": self.result,
            "error": self.error,
        })
    }
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, Job>,
    finished: VecDeque<String>,
}

/// The job table.
#[derive(Default)]
pub(crate) struct Jobs {
    inner: Mutex<Inner>,
}

fn now() -> String {
    hs_backup::rfc3339(time::OffsetDateTime::now_utc())
}

fn poisoned() -> Error {
    Error::of_kind(
        ErrorKind::Library,
        code::INTERNAL_JOB_TABLE_POISONED,
        "the job table is unusable after a panic",
    )
}

impl Jobs {
    /// Registers a running job, unless one of the same kind already runs for the
    /// deployment (`conflict.job_running`). Returns its id and progress counters.
    pub(crate) fn start(
        &self,
        kind: &'static str,
        deployment: &str,
        backup_id: Option<String>,
    ) -> Result<(String, Arc<JobProgress>)> {
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        if let Some(j) = inner.jobs.values().find(|j| {
            j.kind == kind && j.deployment == deployment && j.status == JobStatus::Running
        }) {
            return Err(Error::of_kind(
                ErrorKind::Conflict,
                code::CONFLICT_JOB_RUNNING,
                format!(
                    "a {kind} job of deployment {deployment} is already running: {}",
                    j.id
                ),
            )
            .with_suggestion(format!(
                "poll GET /v1/jobs/{} until it has finished, then try again",
                j.id
            )));
        }
        let id = format!("job_{}", hex::encode(rand::random::<[u8; 8]>()));
        let progress = Arc::new(JobProgress::default());
        inner.jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                kind,
                deployment: deployment.to_owned(),
                backup_id,
                status: JobStatus::Running,
                created_at: now(),
                finished_at: None,
                progress: progress.clone(),
                result: None,
                error: None,
            },
        );
        Ok((id, progress))
    }

    /// Records the end of job `id`: failed when `error` is set, else succeeded. A failed
    /// job may still carry a result (a verify report that found problems).
    pub(crate) fn finish(&self, id: &str, result: Option<Value>, error: Option<Error>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(job) = inner.jobs.get_mut(id) {
            job.finished_at = Some(now());
            job.status = if error.is_some() {
                JobStatus::Failed
            } else {
                JobStatus::Succeeded
            };
            job.result = result;
            job.error = error.map(|e| e.to_json());
        }
        inner.finished.push_back(id.to_owned());
        while inner.finished.len() > KEEP_FINISHED {
            if let Some(old) = inner.finished.pop_front() {
                inner.jobs.remove(&old);
            }
        }
    }

    /// One job as JSON, or `notfound.job`.
    pub(crate) fn get(&self, id: &str) -> Result<Value> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        inner.jobs.get(id).map(Job::to_json).ok_or_else(|| {
            Error::of_kind(
                ErrorKind::NotFound,
                code::NOTFOUND_JOB,
                format!("no job {id:?} (jobs are kept in memory until the server restarts)"),
            )
            .with_suggestion("GET /v1/jobs lists the jobs this server knows")
        })
    }

    /// Every known job, newest first.
    pub(crate) fn list(&self) -> Result<Vec<Value>> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        let mut jobs: Vec<&Job> = inner.jobs.values().collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(jobs.into_iter().map(Job::to_json).collect())
    }

    /// (kind, status) -> count, for /metrics.
    pub(crate) fn counts(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        let mut out = BTreeMap::new();
        if let Ok(inner) = self.inner.lock() {
            for j in inner.jobs.values() {
                *out.entry((j.kind, j.status.as_str())).or_insert(0) += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_running_job_per_kind_and_deployment() {
        let jobs = Jobs::default();
        let (id, _) = jobs.start("backup", "main", None).expect("start");
        let e = jobs.start("backup", "main", None).unwrap_err();
        assert_eq!(e.code(), "conflict.job_running");
        assert!(jobs.start("verify", "main", None).is_ok());
        assert!(jobs.start("backup", "other", None).is_ok());
        jobs.finish(&id, Some(json!({"backup_id": "x"})), None);
        assert_eq!(jobs.get(&id).expect("job")["status"], "succeeded");
        assert!(jobs.start("backup", "main", None).is_ok());
        assert_eq!(jobs.get("job_nope").unwrap_err().code(), "notfound.job");
    }
}
