//! A deployment name the repository does not hold (`backup mian`, `list mian`) is
//! `notfound.deployment` (exit 6) with "did you mean main?", not an empty answer or a
//! new, misnamed deployment; a first backup under a new name still works (the rule
//! is in docs/cli.md, "Deployment names").

use crate::support::{backup, bin, hs, init_and_backup, Run, Scratch};

/// Asserts `run` is `notfound.deployment` suggesting `main`.
fn assert_unknown(run: &Run, what: &str) {
    assert_eq!(run.status, 6, "{what}: {}\n{}", run.stdout, run.stderr);
    assert_eq!(run.err_code(), "notfound.deployment", "{what}");
    let v = run.json();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("did you mean main?"), "{what}: {message}");
    let suggestion = v["error"]["suggestion"].as_str().unwrap();
    assert!(suggestion.contains("main"), "{what}: {suggestion}");
}

#[test]
fn a_mistyped_deployment_is_refused_with_did_you_mean_and_a_new_one_backs_up() {
    let pg = crate::support::cluster_with("SELECT 1");
    let s = Scratch::new();
    let (url, conn, _) = init_and_backup(&s, &pg, "main");

    let typo = backup(&s, "mian", &conn, &url);
    assert_unknown(&typo, "backup mian");
    assert!(
        !s.repo_dir().join("deployments").join("mian").exists(),
        "the refused backup wrote something"
    );
    assert_unknown(&hs(&s, &["list", "mian", "--repo", &url]), "list mian");
    assert_unknown(
        &hs(&s, &["wal", "list", "mian", "--repo", &url]),
        "wal list",
    );
    assert_unknown(&hs(&s, &["status", "mian", "--repo", &url]), "status mian");
    let target = s.path("restored");
    let restore = hs(
        &s,
        &[
            "restore",
            "mian",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--repo",
            &url,
        ],
    );
    assert_unknown(&restore, "restore mian");
    assert!(!target.exists(), "the refused restore wrote {target:?}");

    // Human output: the code and the question on stderr.
    let out = bin()
        .args(["list", "mian", "--repo", &url, "--keyring"])
        .arg(s.keyring())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error[notfound.deployment]") && stderr.contains("did you mean main?"),
        "{stderr}"
    );

    // A new name that is no near miss: its first backup goes ahead.
    backup(&s, "reports", &conn, &url).ok();
    // A near miss meant as new: --new-deployment.
    let mut args = vec!["backup", "mian", "--pg-connection", &conn, "--repo", &url];
    args.push("--new-deployment");
    hs(&s, &args).ok();
    let listed = hs(&s, &["list", "mian", "--repo", &url]).ok();
    assert_eq!(listed["backups"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_deployment_the_config_defines_takes_its_first_backup() {
    let pg = crate::support::cluster_with("SELECT 1");
    let s = Scratch::new();
    let (url, conn, _) = init_and_backup(&s, &pg, "main");
    let config = s.path("pg_hardstorage.yaml");
    std::fs::write(
        &config,
        format!("repo: {url}\ndeployments:\n  mains:\n    pg_connection: \"{conn}\"\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // `mains` is a near miss of `main`, but the config defines it.
    hs(&s, &["backup", "mains", "--config", config]).ok();
    // In a repository with no deployments an empty listing is the truth.
    let empty = Scratch::new();
    let empty_url = empty.repo_url();
    hs(&empty, &["repo", "init", &empty_url]).ok();
    let listed = hs(&empty, &["list", "mian", "--repo", &empty_url]).ok();
    assert_eq!(listed["backups"].as_array().map(Vec::len), Some(0));
}
