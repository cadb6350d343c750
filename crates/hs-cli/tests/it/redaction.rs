//! Issue 13 item 5: credentials written into a repository URL are refused
//! without being echoed. Every form (userinfo of s3://, file:// and sftp://,
//! `secret_access_key=`, `sig=`, `token=`, an `endpoint=` with userinfo, plain
//! and percent-encoded, a URL without a scheme), given by `--repo`, by
//! `PG_HARDSTORAGE_REPO` and by `repo:` in the config file, through `list`,
//! `status`, `doctor`, `backup` and `wal list`, human (stderr) and `-o json`,
//! at the default verbosity and at `-vvv`: the secret appears nowhere in
//! stdout or stderr, the refusal keeps its code and exit code, and the
//! message still shows the URL, redacted.

use serde_json::Value;

use crate::support::{bin, human, Run, Scratch};

/// Stands for the secret in every form; searched for in all output.
const SECRET: &str = "hunter2ZQX";

fn forms() -> Vec<String> {
    let s = SECRET;
    vec![
        format!("s3://AKIA:{s}@bucket/p"),
        format!("s3://bucket/p?secret_access_key={s}"),
        format!("s3://bucket/p?region=eu-west-1&Secret_Access_Key={s}"),
        format!("azblob://acct.blob.core.windows.net/c/p?sv=2022-11-02&sig={s}"),
        format!("gcs://bucket/p?token={s}"),
        format!("file://user:{s}@host/x"),
        format!("sftp://user:{s}@host/x"),
        format!("scp://user:{s}@host/x"),
        format!("s3://bucket/p?endpoint=http://minio:{s}@localhost:9000"),
        format!("s3://bucket/p?endpoint=http%3A%2F%2Fminio%3A{s}%40localhost%3A9000"),
        format!("AKIA:{s}@bucket/p"),
    ]
}

/// Where the URL comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    Flag,
    Env,
    ConfigFile,
}

fn run(s: &Scratch, args: &[&str], url: &str, source: Source, json: bool, vvv: bool) -> Run {
    let mut cmd = bin();
    if vvv {
        cmd.arg("-vvv");
    }
    if json {
        cmd.args(["-o", "json"]);
    }
    cmd.args(args)
        .arg("--keyring")
        .arg(s.keyring())
        .env_remove("PG_HARDSTORAGE_LOG")
        .env("HOME", s.path("home"));
    match source {
        Source::Flag => {
            cmd.args(["--repo", url]);
        }
        Source::Env => {
            cmd.env("PG_HARDSTORAGE_REPO", url);
        }
        Source::ConfigFile => {
            let path = s.path("pg_hardstorage.yaml");
            std::fs::write(&path, format!("deployments:\n  main:\n    repo: '{url}'\n")).unwrap();
            cmd.arg("--config").arg(&path);
        }
    }
    Run::of(&mut cmd)
}

/// The code a refused URL gets: the config file's own check refuses a
/// `repo:` that is not a URL at all.
fn expected_code(url: &str, source: Source) -> &'static str {
    match source {
        Source::ConfigFile if !url.contains("://") => "usage.config_invalid",
        _ => "usage.invalid_url",
    }
}

fn conninfo() -> String {
    format!("host=/nonexistent-hs-socket-dir user=x password={SECRET}")
}

#[test]
fn credentials_in_repository_urls_are_never_echoed() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("home")).unwrap();
    // A real keyring, so that the runs get as far as the repository URL.
    let init = human(&s, &["repo", "init", &s.repo_url()]);
    assert!(init.status.success(), "{init:?}");
    let conn = conninfo();
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("list", vec!["list", "main"]),
        ("status", vec!["status", "main"]),
        ("wal list", vec!["wal", "list", "main"]),
        ("backup", vec!["backup", "main", "--pg-connection", &conn]),
        (
            "doctor",
            vec![
                "doctor",
                "main",
                "--exit-on-issues",
                "--pg-connection",
                &conn,
            ],
        ),
    ];
    let mut runs = 0;
    for url in forms() {
        for source in [Source::Flag, Source::Env, Source::ConfigFile] {
            for (name, args) in &commands {
                for json in [false, true] {
                    // Logs at -vvv for the JSON runs, the default level for the others.
                    let r = run(&s, args, &url, source, json, json);
                    runs += 1;
                    let what = format!("`{name}` with {url:?} from {source:?} (json: {json})");
                    for (stream, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
                        assert!(
                            !text.contains(SECRET),
                            "the secret is on {stream} of {what}:\n{text}"
                        );
                    }
                    check_refusal(name, &r, &url, source, json, &what);
                }
            }
        }
    }
    assert_eq!(runs, forms().len() * 3 * commands.len() * 2);
}

fn check_refusal(name: &str, r: &Run, url: &str, source: Source, json: bool, what: &str) {
    let code = expected_code(url, source);
    if name == "doctor" {
        // Doctor reports the URL as a finding of the repository checks.
        assert_eq!(r.status, 10, "{what}:\n{}{}", r.stdout, r.stderr);
        let text = if json {
            let v: Value = serde_json::from_str(r.stdout.trim())
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{}", r.stdout));
            assert_eq!(v["error"]["code"], "doctor.issues_found", "{what}");
            assert_eq!(v["error"]["exit_code"], 10, "{what}");
            let checks = &v["result"]["deployments"][0]["checks"];
            let named = |n: &str| {
                checks
                    .as_array()
                    .and_then(|a| a.iter().find(|c| c["name"] == n))
                    .cloned()
                    .unwrap_or_else(|| panic!("{what}: no {n} check in {checks}"))
            };
            let c = match code {
                "usage.config_invalid" => named("config"),
                _ => named("repo_writable"),
            };
            assert_eq!(c["state"], "issue", "{what}: {c}");
            c["detail"].as_str().unwrap_or_default().to_owned()
        } else {
            r.stdout.clone()
        };
        assert!(
            text.contains("***"),
            "{what}: the URL is not shown redacted:\n{text}"
        );
        return;
    }
    assert_eq!(r.status, 2, "{what}:\n{}{}", r.stdout, r.stderr);
    let message = if json {
        let v: Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{}", r.stdout));
        assert_eq!(v["ok"], false, "{what}");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert_eq!(v["error"]["exit_code"], 2, "{what}");
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        assert!(r.stdout.is_empty(), "{what}: {}", r.stdout);
        let first = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error["))
            .unwrap_or("");
        assert!(
            first.starts_with(&format!("error[{code}]: ")),
            "{what}:\n{}",
            r.stderr
        );
        first.to_owned()
    };
    assert!(
        message.contains("***"),
        "{what}: the URL is not shown redacted: {message}"
    );
}

/// clap quotes an argument it rejects: a URL given where none is expected
/// is refused without its credentials too.
#[test]
fn rejected_arguments_are_echoed_without_credentials() {
    let s = Scratch::new();
    for url in forms() {
        for json in [false, true] {
            let mut cmd = bin();
            if json {
                cmd.args(["-o", "json"]);
            }
            let out = cmd
                .args(["list", "main", &url])
                .arg("--keyring")
                .arg(s.keyring())
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{url}: {text}");
            assert!(text.contains("unexpected argument"), "{url}: {text}");
            assert!(!text.contains(SECRET), "{url} (json: {json}): {text}");
        }
    }
}
