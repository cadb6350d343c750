//! Backups through the API against a real PostgreSQL cluster: trigger a backup, poll the
//! job to its end, list and show the backup, preview a restore, read the WAL status,
//! verify the backup as a job, and see the jobs in /metrics; each job's outcome reaches
//! the deployment's webhook sink.

use std::time::Duration;

use hs_api::Deployment;
use hs_testkit::{HttpBehaviour, HttpSink, PgCluster, PgOptions};

use crate::support::{config, repo_env, request, run_job, start, wait_job, R, TOKEN};

/// The cluster, or a skip notice when PostgreSQL is not installed (a failure under CI).
fn cluster() -> Option<PgCluster> {
    match PgCluster::start(PgOptions::default()) {
        Ok(pg) => Some(pg),
        Err(e) if std::env::var_os("CI").is_none() && e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: no PostgreSQL binaries ({e}); `cargo xtask ci` installs them");
            None
        }
        Err(e) => panic!("cannot start PostgreSQL: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_a_backup_then_list_show_preview_and_verify_it() -> R {
    let Some(pg) = cluster() else { return Ok(()) };
    pg.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    )?;
    let env = repo_env().await?;
    let mut main = Deployment::new("main", &env.url);
    main.pg_connection = Some(pg.replication_conninfo());
    let hooks = HttpSink::start(HttpBehaviour::Status(200))?;
    let sink = hs_ops::notify::SinkConfig {
        kind: Some(hs_ops::notify::SinkKind::Webhook),
        url: Some(hooks.url("/hook")),
        on: Some(vec!["all".to_owned()]),
        ..Default::default()
    };
    main.notifier = hs_ops::notify::Notifier::new(vec![sink], None);
    let srv = start(config(&env, vec![main], true)).await?;
    let t = Some(TOKEN);
    let event = |n: usize| -> serde_json::Value {
        let reqs = tokio::task::block_in_place(|| hooks.wait_for(n, Duration::from_secs(10)));
        assert!(reqs.len() >= n, "{reqs:?}");
        serde_json::from_slice(&reqs[n - 1].body).expect("webhook JSON")
    };

    let r = request(
        srv.addr,
        "POST",
        "/v1/deployments/main/backups",
        t,
        Some("{}"),
    )
    .await?;
    let id = r.job_id()?;
    let job = r.json()["result"].clone();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    assert_eq!(job["kind"], "backup");
    assert!(
        !r.text().contains(pg.replication_password()),
        "the connection password leaked into an answer"
    );

    let done = wait_job(srv.addr, &id, Duration::from_secs(300)).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    let backup_id = done["result"]["backup_id"]
        .as_str()
        .ok_or("backup_id")?
        .to_owned();
    assert!(done["result"]["logical_bytes"].as_u64().ok_or("bytes")? > 1_000_000);
    assert!(done["progress"]["bytes_done"].as_u64().ok_or("progress")? > 0);
    let e = event(1);
    assert_eq!(e["event"], "backup.succeeded", "{e}");
    assert_eq!(e["deployment"], "main");
    assert_eq!(e["figures"]["backup_id"], backup_id.as_str());
    assert_eq!(e["figures"]["job"], id.as_str());

    // The backup is listed and can be shown, by id and as `latest`.
    let r = request(srv.addr, "GET", "/v1/deployments/main/backups", t, None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json()["result"]["backups"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["backup_id"], backup_id.as_str());
    for which in [backup_id.as_str(), "latest"] {
        let r = request(
            srv.addr,
            "GET",
            &format!("/v1/deployments/main/backups/{which}"),
            t,
            None,
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json()["result"].clone();
        assert_eq!(b["backup_id"], backup_id.as_str());
        let archive = b["archives"][0]["name"].as_str().ok_or("archive name")?;
        assert!(archive.starts_with("base"), "{b}");
        assert!(b["archives"][0]["files"].as_u64().ok_or("files")? > 100);
    }

    // A restore preview plans and writes nothing.
    let before = dir_entries(env.dir.path())?;
    let r = request(
        srv.addr,
        "POST",
        "/v1/deployments/main/restores/preview",
        t,
        Some(r#"{"backup":"latest"}"#),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let plan = r.json()["result"].clone();
    assert_eq!(plan["preview"], true);
    assert_eq!(plan["plan"]["backup"]["backup_id"], backup_id.as_str());
    assert_eq!(plan["plan"]["target"]["kind"], "latest");
    // A target before the backup cannot be reached from it.
    let r = request(
        srv.addr,
        "POST",
        "/v1/deployments/main/restores/preview",
        t,
        Some(r#"{"to_lsn":"0/10"}"#),
    )
    .await?;
    assert!(matches!(r.status, 404 | 409), "{}", r.text());
    assert_eq!(r.json()["ok"], false);
    assert_eq!(
        dir_entries(env.dir.path())?,
        before,
        "the preview wrote something"
    );

    let r = request(srv.addr, "GET", "/v1/deployments/main/wal", t, None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["deployment"], "main");

    // Verify the backup as a job.
    let v = run_job(
        srv.addr,
        "/v1/deployments/main/backups/latest/verify",
        None,
        Duration::from_secs(300),
    )
    .await?;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["backup_id"], backup_id.as_str());
    assert!(
        v["result"]["bytes_read"].as_u64().ok_or("bytes_read")? > 0,
        "{v}"
    );
    let e = event(2);
    assert_eq!(e["event"], "backup_verify.succeeded", "{e}");
    assert_eq!(e["command"], "verify");

    let r = request(srv.addr, "GET", "/v1/jobs", t, None).await?;
    assert_eq!(r.json()["result"]["jobs"].as_array().map(Vec::len), Some(2));
    let r = request(srv.addr, "GET", "/metrics", t, None).await?;
    let text = r.text();
    assert!(
        text.contains(r#"pg_hardstorage_api_jobs{kind="backup",status="succeeded"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pg_hardstorage_api_jobs{kind="verify",status="succeeded"} 1"#),
        "{text}"
    );

    // A second backup while none runs is accepted; its job succeeds too.
    let r = request(srv.addr, "POST", "/v1/deployments/main/backups", t, None).await?;
    let id2 = r.job_id()?;
    // While it runs, another backup of the same deployment is a conflict (if it is
    // still running by the time we ask; a fast machine may already be done).
    let again = request(srv.addr, "POST", "/v1/deployments/main/backups", t, None).await?;
    if again.status != 202 {
        assert_eq!(again.status, 409, "{}", again.text());
        assert_eq!(again.json()["error"]["code"], "conflict.job_running");
    }
    let done2 = wait_job(srv.addr, &id2, Duration::from_secs(300)).await?;
    assert_eq!(done2["status"], "succeeded", "{done2}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backup_fails_its_job_with_a_code() -> R {
    let env = repo_env().await?;
    let port = hs_testkit::free_port()?;
    let mut main = Deployment::new("main", &env.url);
    // Nothing listens there.
    main.pg_connection = Some(format!(
        "host=127.0.0.1 port={port} user=nobody password=sekrit-pw connect_timeout=5"
    ));
    let srv = start(config(&env, vec![main], true)).await?;
    let job = run_job(
        srv.addr,
        "/v1/deployments/main/backups",
        None,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(job["status"], "failed", "{job}");
    let code = job["error"]["code"].as_str().ok_or("code")?;
    assert!(code.starts_with("unreachable."), "{job}");
    assert!(
        !job.to_string().contains("sekrit-pw"),
        "the password leaked: {job}"
    );
    Ok(())
}

fn dir_entries(root: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_another_cluster_fails_its_job_unless_allowed() -> R {
    let Some(a) = cluster() else { return Ok(()) };
    let Some(b) = cluster() else { return Ok(()) };
    let env = repo_env().await?;
    // Deployment `main` holds a backup of cluster A.
    let keyring = hs_crypt::Keyring::load(&env.keyring)?;
    let repo = hs_repo::Repository::open(&env.url, &keyring).await?;
    let conn_a = hs_proto::ConnConfig::parse(&a.replication_conninfo())?;
    let first = hs_backup::run_backup(
        &conn_a,
        &repo,
        &hs_backup::BackupOptions::new("main"),
        &hs_backup::NoProgress,
    )
    .await?;
    // The server's `main` points at cluster B.
    let mut main = Deployment::new("main", &env.url);
    main.pg_connection = Some(b.replication_conninfo());
    let srv = start(config(&env, vec![main], true)).await?;

    for body in [
        None,
        Some("{}"),
        Some(r#"{"allow_system_id_change":false}"#),
    ] {
        let done = run_job(
            srv.addr,
            "/v1/deployments/main/backups",
            body,
            Duration::from_secs(300),
        )
        .await?;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(
            done["error"]["code"], "conflict.system_identifier_mismatch",
            "{done}"
        );
    }
    let listed = repo.list_backups("main").await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].backup_id, first.manifest.backup_id);

    let done = run_job(
        srv.addr,
        "/v1/deployments/main/backups",
        Some(r#"{"allow_system_id_change":true}"#),
        Duration::from_secs(300),
    )
    .await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(repo.list_backups("main").await?.len(), 2);
    Ok(())
}
