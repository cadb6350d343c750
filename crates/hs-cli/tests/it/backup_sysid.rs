//! `backup` of another cluster (another system identifier) into an existing deployment
//! is refused (exit 7, `conflict.system_identifier_mismatch`) before anything is written,
//! whether the deployment holds backups or only WAL from `wal stream`, unless
//! `--allow-system-id-change` says the cluster was re-created.

use std::time::{Duration, Instant};

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{hs, Scratch, Streamer};

fn system_identifier(pg: &PgCluster) -> String {
    pg.psql("SELECT system_identifier FROM pg_control_system()")
        .expect("system identifier")
}

fn backup(
    s: &Scratch,
    deployment: &str,
    pg: &PgCluster,
    url: &str,
    extra: &[&str],
) -> crate::support::Run {
    let conn = pg.replication_conninfo();
    let mut args = vec![
        "backup",
        deployment,
        "--pg-connection",
        &conn,
        "--repo",
        url,
    ];
    args.extend_from_slice(extra);
    hs(s, &args)
}

fn backup_ids(s: &Scratch, deployment: &str, url: &str) -> Vec<String> {
    let l = hs(s, &["list", deployment, "--repo", url]).ok();
    crate::support::backup_ids(&l)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn assert_mismatch(run: &crate::support::Run, deployment: &str, ours: &str, theirs: &str) {
    assert_eq!(
        run.status, 7,
        "backup of another cluster was not refused\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(run.err_code(), "conflict.system_identifier_mismatch");
    let v = run.json();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(ours) && msg.contains(theirs) && msg.contains(deployment),
        "message must name both identifiers and the deployment: {msg}"
    );
    let sugg = v["error"]["suggestion"].as_str().unwrap_or_default();
    assert!(
        sugg.contains("--allow-system-id-change") && sugg.contains("deployment"),
        "suggestion must offer another deployment name or the flag: {sugg}"
    );
}

#[test]
fn backup_of_another_cluster_into_a_deployment_is_refused_unless_allowed() {
    let a = PgCluster::start(PgOptions::default()).expect("start cluster A");
    let b = PgCluster::start(PgOptions::default()).expect("start cluster B");
    let (sys_a, sys_b) = (system_identifier(&a), system_identifier(&b));
    assert_ne!(
        sys_a, sys_b,
        "two initdb runs gave the same system identifier"
    );
    let s = Scratch::new();
    let url = s.repo_url();
    hs(&s, &["repo", "init", &url]).ok();

    let first = backup(&s, "d", &a, &url, &[]).ok();
    assert_eq!(first["system_identifier"], sys_a.as_str());
    let before = backup_ids(&s, "d", &url);
    assert_eq!(before.len(), 1);

    let refused = backup(&s, "d", &b, &url, &[]);
    assert_mismatch(&refused, "d", &sys_b, &sys_a);
    // Nothing new listed (so `latest` is still cluster A's backup), no lease left behind.
    assert_eq!(backup_ids(&s, "d", &url), before);
    assert!(s.leases().is_empty(), "lease left behind: {:?}", s.leases());
    // A repeat of the real cluster is still accepted.
    backup(&s, "d", &a, &url, &[]).ok();
    let after_a = backup_ids(&s, "d", &url);
    assert_eq!(after_a.len(), 2);

    // With the flag (the cluster was really re-created) it is accepted and becomes latest.
    let allowed = backup(&s, "d", &b, &url, &["--allow-system-id-change"]).ok();
    assert_eq!(allowed["system_identifier"], sys_b.as_str());
    let ids = backup_ids(&s, "d", &url);
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids.last().map(String::as_str),
        allowed["backup_id"].as_str()
    );
    assert!(s.leases().is_empty(), "lease left behind: {:?}", s.leases());
}

#[test]
fn backup_of_another_cluster_into_a_wal_only_deployment_is_refused() {
    let a = PgCluster::start(PgOptions::default()).expect("start cluster A");
    let b = PgCluster::start(PgOptions::default()).expect("start cluster B");
    let (sys_a, sys_b) = (system_identifier(&a), system_identifier(&b));
    let s = Scratch::new();
    let url = s.repo_url();
    hs(&s, &["repo", "init", &url]).ok();

    // `wal stream` of cluster A into deployment `demo`, no backup yet.
    let conn_a = a.replication_conninfo();
    let guard = Streamer::start(&s, "demo", &conn_a, &url, &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        a.psql("SELECT pg_switch_wal()").expect("switch wal");
        let l = hs(&s, &["wal", "list", "demo", "--repo", &url]);
        if l.status == 0
            && l.json()["result"]["ranges"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no WAL segment archived: {}",
            l.stdout
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, _) = guard.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    assert!(backup_ids(&s, "demo", &url).is_empty());

    let refused = backup(&s, "demo", &b, &url, &[]);
    assert_mismatch(&refused, "demo", &sys_b, &sys_a);
    assert!(
        backup_ids(&s, "demo", &url).is_empty(),
        "refused backup was listed"
    );
    assert!(s.leases().is_empty(), "lease left behind: {:?}", s.leases());

    // The cluster whose WAL it is may take the first backup.
    let ok = backup(&s, "demo", &a, &url, &[]).ok();
    assert_eq!(ok["system_identifier"], sys_a.as_str());
    // And with the flag, another cluster too.
    backup(&s, "demo", &b, &url, &["--allow-system-id-change"]).ok();
    assert_eq!(backup_ids(&s, "demo", &url).len(), 2);
}
