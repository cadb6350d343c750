//! Helpers: run the binary, parse its JSON envelope, scan a repository's bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A scratch directory with a keyring and a file:// repository URL inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("hs-cli-it-")
            .tempdir()
            .expect("tempdir");
        Scratch { dir }
    }
    pub fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring")
    }
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn repo_url(&self) -> String {
        format!("file://{}", self.repo_dir().display())
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What one run of the binary did.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON envelope on stdout (the run must have used `-o json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let v = self.json();
        assert_eq!(v["schema"], "pg_hardstorage.v1");
        assert_eq!(v["ok"], true);
        v["result"].clone()
    }
    pub fn err_code(&self) -> String {
        let v = self.json();
        assert_eq!(v["ok"], false, "expected failure: {}", self.stdout);
        assert_eq!(
            v["error"]["exit_code"].as_i64(),
            Some(i64::from(self.status))
        );
        assert!(
            v["error"]["suggestion"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "error without a suggestion: {}",
            self.stdout
        );
        v["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Runs `pg_hardstorage` with the scratch keyring and `-o json`.
pub fn hs(s: &Scratch, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pg_hardstorage"))
        .args(args)
        .args(["-o", "json", "--keyring"])
        .arg(s.keyring())
        .env_remove("PG_HARDSTORAGE_REPO")
        .env_remove("PG_HARDSTORAGE_PG_CONNECTION")
        .output()
        .expect("run pg_hardstorage");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `repo init` of the scratch repository, then one `backup` of `deployment` from `pg`;
/// returns the repository URL, the replication conninfo and the backup's JSON result.
pub fn init_and_backup(
    s: &Scratch,
    pg: &hs_testkit::PgCluster,
    deployment: &str,
) -> (String, String, Value) {
    let url = s.repo_url();
    hs(s, &["repo", "init", &url]).ok();
    let conn = pg.replication_conninfo();
    let backup = hs(
        s,
        &[
            "backup",
            deployment,
            "--pg-connection",
            &conn,
            "--repo",
            &url,
        ],
    )
    .ok();
    (url, conn, backup)
}

/// Total bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let ft = e.file_type().expect("file_type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Whether `needle` occurs in any file under `dir`.
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    files_under(dir).into_iter().find(|p| {
        let data = std::fs::read(p).unwrap_or_default();
        data.windows(needle.len()).any(|w| w == needle)
    })
}
