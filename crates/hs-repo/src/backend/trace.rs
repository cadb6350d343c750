//! A backend wrapper that appends one line per storage call to a file, for measuring
//! what a command reads and writes (`cargo xtask bench requests`). Off unless the
//! environment variable [`TRACE_ENV`] names a file when the backend is opened.
//!
//! Each line is `<op>\t<object name or listing prefix>\t<bytes>\t<ok|error code>`, where
//! `<op>` is `get`, `get_range`, `list`, `put`, `put_if_absent`, `stat` or `delete`, and
//! `<bytes>` is what a read returned, what a write sent, or for `list` the number of
//! entries listed. The file is opened for appending and each line is written with one
//! `write`, so several processes may share it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, ObjectInfo};
use crate::error::Result;

/// The environment variable that turns tracing on: the file to append to.
pub(crate) const TRACE_ENV: &str = "HS_STORAGE_TRACE";

/// Appends one line per call of the inner backend to a file (see the module docs).
pub(crate) struct TraceBackend {
    inner: Arc<dyn Backend>,
    out: Mutex<std::fs::File>,
}

impl TraceBackend {
    /// `inner`, traced into `path` (created if absent, appended to).
    pub fn new(inner: Arc<dyn Backend>, path: &std::path::Path) -> std::io::Result<TraceBackend> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(TraceBackend {
            inner,
            out: Mutex::new(out),
        })
    }

    /// `inner` wrapped when [`TRACE_ENV`] names a file that opens; `inner` itself otherwise.
    pub fn from_env(inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
        let Some(path) = std::env::var_os(TRACE_ENV).filter(|p| !p.is_empty()) else {
            return inner;
        };
        match TraceBackend::new(inner.clone(), std::path::Path::new(&path)) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::warn!("{TRACE_ENV}: cannot open {path:?}, not tracing: {e}");
                inner
            }
        }
    }

    fn line<T>(&self, op: &str, name: &str, bytes: impl Fn(&T) -> u64, r: &Result<T>) {
        let (n, outcome) = match r {
            Ok(v) => (bytes(v), "ok"),
            Err(e) => (0, e.code()),
        };
        let text = format!("{op}\t{name}\t{n}\t{outcome}\n");
        if let Ok(mut f) = self.out.lock() {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

#[async_trait]
impl Backend for TraceBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn read_window(&self) -> u32 {
        self.inner.read_window()
    }

    async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        let len = data.len() as u64;
        let r = self.inner.put_if_absent(name, data).await;
        self.line("put_if_absent", name, |_| len, &r);
        r
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        let r = self.inner.put(name, data).await;
        self.line("put", name, |_| len, &r);
        r
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        let r = self.inner.get(name).await;
        self.line("get", name, |b: &Bytes| b.len() as u64, &r);
        r
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        let r = self.inner.get_range(name, offset, len).await;
        self.line("get_range", name, |b: &Bytes| b.len() as u64, &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let r = self.inner.list(prefix).await;
        self.line("list", prefix, |v: &Vec<ObjectInfo>| v.len() as u64, &r);
        r
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let r = self.inner.delete(name).await;
        self.line("delete", name, |_| 0, &r);
        r
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectInfo>> {
        let r = self.inner.stat(name).await;
        self.line("stat", name, |_| 0, &r);
        r
    }

    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_line_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("repo").display());
        let inner: Arc<dyn Backend> =
            Arc::new(super::super::FsBackend::new(&url, &dir.path().join("repo")));
        let trace = dir.path().join("trace");
        let b = TraceBackend::new(inner, &trace).unwrap();
        assert!(b
            .put_if_absent("a/x", Bytes::from_static(b"hello"))
            .await
            .unwrap());
        assert_eq!(b.get("a/x").await.unwrap().len(), 5);
        assert_eq!(b.get_range("a/x", 1, 2).await.unwrap().len(), 2);
        assert_eq!(b.list("a/").await.unwrap().len(), 1);
        assert!(b.get("a/y").await.is_err());
        let text = std::fs::read_to_string(&trace).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "put_if_absent\ta/x\t5\tok",
                "get\ta/x\t5\tok",
                "get_range\ta/x\t2\tok",
                "list\ta/\t1\tok",
                "get\ta/y\t0\tnotfound.object",
            ]
        );
    }
}
