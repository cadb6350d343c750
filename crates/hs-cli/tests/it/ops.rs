//! Operations: pg_hardstorage.yaml (discovery, precedence, errors), `init`, `doctor`
//! (healthy and each failure path) and `status`, against real clusters and a real
//! file:// repository, through the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hs_testkit::{PgCluster, PgOptions};
use serde_json::Value;

use crate::support::{
    archive_current_wal, bin, cluster_with, start_restored, Run, Scratch, Streamer,
};

/// Runs the binary in the scratch directory (so ./pg_hardstorage.yaml is the one found),
/// with HOME and XDG_CONFIG_HOME inside it, the scratch keyring, and `extra_env`.
fn hs_in(s: &Scratch, args: &[&str], extra_env: &[(&str, &str)], json: bool) -> Run {
    let mut cmd = bin();
    cmd.args(args)
        .arg("--keyring")
        .arg(s.keyring())
        .current_dir(s.dir.path())
        .env("HOME", s.path("home"))
        .env("XDG_CONFIG_HOME", s.path("home/.config"))
        .env_remove("PG_HARDSTORAGE_CONFIG")
        .env_remove("PG_HARDSTORAGE_KEYRING");
    if json {
        cmd.args(["-o", "json"]);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Run::of(&mut cmd)
}

/// `init --pg-connection CONN --repo URL --deployment demo --yes` and `extra`.
fn init_demo(s: &Scratch, conn: &str, url: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "init",
        "--pg-connection",
        conn,
        "--repo",
        url,
        "--deployment",
        "demo",
        "--yes",
    ];
    args.extend_from_slice(extra);
    hs_in(s, &args, &[], true)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

/// `status demo` reports which repository it used.
fn status_repo(r: &Run) -> String {
    r.ok()["deployments"][0]["repo"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn config_precedence_is_flag_then_env_then_deployment_then_top_level() {
    let s = Scratch::new();
    let urls: Vec<String> = ["flag", "env", "dep", "top"]
        .iter()
        .map(|n| format!("file://{}", s.path(&format!("repo_{n}")).display()))
        .collect();
    for u in &urls {
        hs_in(&s, &["repo", "init", u], &[], true).ok();
    }
    let (flag, env, dep, top) = (&urls[0], &urls[1], &urls[2], &urls[3]);
    write(
        &s.path("pg_hardstorage.yaml"),
        &format!(
            "repo: {top}\ndeployments:\n  demo:\n    repo: {dep}\n  other:\n    pg_connection: host=127.0.0.1 port=1 connect_timeout=1\n"
        ),
    );
    let env_repo = [("PG_HARDSTORAGE_REPO", env.as_str())];
    let r = hs_in(&s, &["status", "demo", "--repo", flag], &env_repo, true);
    assert_eq!(&status_repo(&r), flag, "the flag beats the environment");
    let r = hs_in(&s, &["status", "demo"], &env_repo, true);
    assert_eq!(&status_repo(&r), env, "the environment beats the file");
    let r = hs_in(&s, &["status", "demo"], &[], true);
    assert_eq!(
        &status_repo(&r),
        dep,
        "the deployment's entry beats the top level"
    );
    let r = hs_in(&s, &["status", "other"], &[], true);
    assert_eq!(&status_repo(&r), top, "the top level is the default");
    // status shows an unreachable server, it does not fail on it.
    assert_eq!(r.ok()["deployments"][0]["server"]["reachable"], false);

    // --config / PG_HARDSTORAGE_CONFIG point elsewhere; ./pg_hardstorage.yaml is not read then.
    write(
        &s.path("alt.yaml"),
        &format!("deployments:\n  demo:\n    repo: {top}\n"),
    );
    let alt = s.path("alt.yaml");
    let r = hs_in(
        &s,
        &["status", "demo", "--config", alt.to_str().unwrap()],
        &[],
        true,
    );
    assert_eq!(&status_repo(&r), top);
    let r = hs_in(
        &s,
        &["status", "demo"],
        &[("PG_HARDSTORAGE_CONFIG", alt.to_str().unwrap())],
        true,
    );
    assert_eq!(&status_repo(&r), top);

    // The user's config directory is searched when ./ has none.
    std::fs::remove_file(s.path("pg_hardstorage.yaml")).unwrap();
    std::fs::create_dir_all(s.path("home/.config/pg_hardstorage")).unwrap();
    write(
        &s.path("home/.config/pg_hardstorage/pg_hardstorage.yaml"),
        &format!("repo: {dep}\n"),
    );
    let r = hs_in(&s, &["status", "demo"], &[], true);
    assert_eq!(&status_repo(&r), dep);
    std::fs::remove_file(s.path("home/.config/pg_hardstorage/pg_hardstorage.yaml")).unwrap();

    // Nothing gives a value: exit 2 with the code, and the fix names all three ways.
    let r = hs_in(&s, &["list", "demo"], &[], true);
    assert_eq!(r.status, 2, "{}", r.stdout);
    assert_eq!(r.err_code(), "usage.repo_missing");
    let sug = r.json()["error"]["suggestion"].as_str().unwrap().to_owned();
    assert!(
        sug.contains("--repo")
            && sug.contains("PG_HARDSTORAGE_REPO")
            && sug.contains("pg_hardstorage.yaml"),
        "{sug}"
    );
    let r = hs_in(&s, &["backup", "demo", "--repo", flag], &[], true);
    assert_eq!(r.status, 2, "{}", r.stdout);
    assert_eq!(r.err_code(), "usage.pg_connection_missing");
    let r = hs_in(&s, &["wal", "preflight", "demo"], &[], true);
    assert_eq!(r.err_code(), "usage.pg_connection_missing");
}

#[test]
fn invalid_or_missing_config_is_reported_with_file_and_line() {
    let s = Scratch::new();
    let path = s.path("pg_hardstorage.yaml");
    write(
        &path,
        "repo: file:///tmp/x\ndeployments:\n  demo:\n    pg_conection: host=db1\n",
    );
    let r = hs_in(&s, &["list", "demo"], &[], true);
    assert_eq!(r.status, 2, "{}", r.stdout);
    assert_eq!(r.err_code(), "usage.config_invalid");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("pg_hardstorage.yaml:4"), "{msg}");
    assert!(msg.contains("pg_conection"), "{msg}");

    // Human output says the same on stderr.
    let r = hs_in(&s, &["list", "demo"], &[], false);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("error[usage.config_invalid]") && r.stderr.contains(":4"),
        "{}",
        r.stderr
    );

    write(
        &path,
        "deployments:\n  demo:\n    repo: file:///tmp/x\n    wal_max_age: soon\n",
    );
    let r = hs_in(&s, &["list", "demo"], &[], true);
    assert_eq!(r.err_code(), "usage.config_invalid");
    assert!(r.stdout.contains("wal_max_age"), "{}", r.stdout);

    let r = hs_in(
        &s,
        &["list", "demo", "--config", "/nonexistent/hs.yaml"],
        &[],
        true,
    );
    assert_eq!(r.status, 6);
    assert_eq!(r.err_code(), "notfound.config");

    // doctor reports a broken config as a failed check instead of stopping.
    write(&path, "repos: file:///tmp/x\n");
    let r = hs_in(&s, &["doctor", "--exit-on-issues"], &[], false);
    assert_eq!(r.status, 10, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("✗ config:"), "{}", r.stdout);
    assert!(r.stdout.contains("Suggested fix:"), "{}", r.stdout);
}

/// Runs `doctor` until it reports every deployment healthy (the stream needs a moment
/// to connect and archive), then returns its JSON.
fn wait_doctor_healthy(s: &Scratch, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = hs_in(s, args, &[], true);
        if r.status == 0 && r.json()["result"]["with_issues"] == 0 {
            return r.json()["result"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "doctor never became healthy:\n{}\n{}",
            r.stdout,
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["deployments"][0]["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {doc}"))
}

#[test]
fn seed_order_repo_init_preflight_stream_init_backup_restore() {
    let pg = cluster_with(
        "CREATE TABLE seed (id int); INSERT INTO seed SELECT generate_series(1, 1000);",
    );
    let s = Scratch::new();
    let url = s.repo_url();
    let conn = pg.replication_conninfo();

    hs_in(&s, &["repo", "init", &url], &[], true).ok();
    let pre = hs_in(
        &s,
        &["wal", "preflight", "demo", "--pg-connection", &conn],
        &[],
        true,
    )
    .ok();
    assert_eq!(pre["ready"], true, "{pre}");
    let _stream = Streamer::start(&s, "demo", &conn, &url, &[]);

    // init after `repo init`: the repository and keyring are opened, not recreated.
    let init = init_demo(&s, &conn, &url, &[]).ok();
    assert_eq!(init["repo_created"], false, "{init}");
    assert_eq!(init["keyring_created"], false, "{init}");
    assert!(init["backup"]["backup_id"].is_string(), "{init}");
    let cfg = s.path("pg_hardstorage.yaml");
    let text = std::fs::read_to_string(&cfg).expect("init wrote ./pg_hardstorage.yaml");
    assert!(text.contains("demo:") && text.contains(&url), "{text}");
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file holds a password");

    // Running init again with the same values changes nothing; other values conflict.
    let again = init_demo(&s, &conn, &url, &["--no-backup"]).ok();
    assert_eq!(again["config_changed"], false);
    let clash = init_demo(&s, "host=elsewhere user=x", &url, &["--no-backup"]);
    assert_eq!(clash.status, 7, "{}", clash.stdout);
    assert_eq!(clash.err_code(), "conflict.config_deployment_exists");
    // Without a terminal and without --yes, init needs every value.
    let r = hs_in(&s, &["init", "--deployment", "demo"], &[], true);
    assert_eq!(r.status, 2);
    assert_eq!(r.err_code(), "usage.init_needs_yes");

    // backup and restore find the repository and connection in ./pg_hardstorage.yaml.
    pg.psql("INSERT INTO seed SELECT generate_series(1001, 2000)")
        .unwrap();
    let b = hs_in(&s, &["backup", "demo"], &[], true).ok();
    let backup_id = b["backup_id"].as_str().unwrap().to_owned();

    // doctor: all ✓ with the stream running.
    let doc = wait_doctor_healthy(&s, &["doctor"]);
    assert_eq!(doc["healthy"], 1, "{doc}");
    for name in [
        "config",
        "pg_reachable",
        "slot",
        "last_backup",
        "last_wal",
        "repo_writable",
        "keyring",
    ] {
        assert_eq!(check(&doc, name)["state"], "ok", "{name}: {doc}");
    }
    // Numbers, not only prose: what was measured, in bytes and seconds.
    let version = pg.psql("SHOW server_version").unwrap();
    let server = &doc["deployments"][0]["server"];
    assert_eq!(server["version"], version.as_str(), "{doc}");
    assert_eq!(server["role"], "primary", "{doc}");
    let lag = check(&doc, "slot")["values"]["lag_bytes"].as_u64();
    assert!(lag.is_some_and(|l| l < 64 << 20), "{doc}");
    let wal_lsn = check(&doc, "pg_reachable")["values"]["wal_lsn"]
        .as_u64()
        .unwrap();
    let now = crate::support::lsn(&pg.psql("SELECT pg_current_wal_lsn()").unwrap());
    assert!(wal_lsn > 0 && wal_lsn <= now, "{doc}");
    for name in ["last_backup", "last_wal"] {
        let v = &check(&doc, name)["values"];
        let (age, limit) = (v["age_seconds"].as_u64(), v["limit_seconds"].as_u64());
        assert!(
            age.is_some_and(|a| a < 600) && limit.is_some_and(|l| l > 0),
            "{doc}"
        );
    }
    assert!(
        check(&doc, "last_wal")["values"]["segments"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let human = hs_in(&s, &["doctor", "demo", "--exit-on-issues"], &[], false);
    assert_eq!(human.status, 0, "{}\n{}", human.stdout, human.stderr);
    let host = &pg.replication_conninfo();
    let first = human.stdout.lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with(&format!("demo — PG {version} — primary @ "))
            && host.contains(
                first
                    .rsplit(" @ ")
                    .next()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
            ),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("✓ slot:"), "{}", human.stdout);
    assert!(!human.stdout.contains('✗'), "{}", human.stdout);
    assert!(
        human.stdout.contains("Summary: 1 healthy."),
        "{}",
        human.stdout
    );

    // schedule: the packaged backup timer, enabled as `systemctl enable` does (a link in
    // timers.target.wants) and edited as `systemctl edit` does (a drop-in).
    let units = s.path("systemd");
    let env = [("PG_HARDSTORAGE_SYSTEMD_DIR", units.to_str().unwrap())];
    std::fs::create_dir_all(units.join("timers.target.wants")).unwrap();
    let sched = |s: &Scratch| {
        let r = hs_in(s, &["doctor", "demo"], &env, true).ok();
        check(&r, "schedule").clone()
    };
    let none = sched(&s);
    assert_eq!(none["state"], "skipped", "{none}");
    assert!(none["detail"]
        .as_str()
        .unwrap()
        .contains("pg_hardstorage-backup@demo.timer"));
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging/systemd/pg_hardstorage-backup@.timer");
    std::fs::copy(&packaged, units.join("pg_hardstorage-backup@.timer")).unwrap();
    std::os::unix::fs::symlink(
        "../pg_hardstorage-backup@.timer",
        units.join("timers.target.wants/pg_hardstorage-backup@demo.timer"),
    )
    .unwrap();
    let packaged_sched = sched(&s);
    assert_eq!(packaged_sched["state"], "ok", "{packaged_sched}");
    let detail = packaged_sched["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("OnCalendar=*-*-* 01:30:00 + up to 30min"),
        "{detail}"
    );
    std::fs::create_dir_all(units.join("pg_hardstorage-backup@demo.timer.d")).unwrap();
    write(
        &units.join("pg_hardstorage-backup@demo.timer.d/override.conf"),
        "[Timer]\nOnCalendar=\nOnCalendar=*-*-* 03:15:00\n",
    );
    let edited = sched(&s);
    let detail = edited["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("OnCalendar=*-*-* 03:15:00 +") && !detail.contains("01:30"),
        "{detail}"
    );
    let human = hs_in(&s, &["doctor", "demo"], &env, false);
    assert!(human.stdout.contains("✓ schedule: "), "{}", human.stdout);

    // status: the last backup and the stream's position.
    let st = hs_in(&s, &["status"], &[], true).ok();
    let d = &st["deployments"][0];
    assert_eq!(d["deployment"], "demo");
    assert_eq!(d["last_backup"]["backup_id"], backup_id.as_str(), "{st}");
    assert!(d["stream"]["newest"].is_string(), "{st}");
    // The newest WAL object is the last segment or the partial after it (issue 19: the
    // demo said "last segment ...04; newest ...01").
    assert!(
        [&d["stream"]["last_segment"], &d["stream"]["partial"]].contains(&&d["stream"]["newest"]),
        "{st}"
    );
    assert!(
        d["last_backup"]["reused_percent"].as_f64().is_some(),
        "{st}"
    );
    assert_eq!(d["server"]["reachable"], true, "{st}");
    assert_eq!(d["server"]["slot_active"], true, "{st}");
    assert!(
        st["repositories"][0]["dedup_ratio"].as_f64().unwrap() > 0.0,
        "{st}"
    );
    let human = hs_in(&s, &["status"], &[], false);
    assert!(human.stdout.contains(&backup_id), "{}", human.stdout);
    assert!(human.stdout.contains("stream:"), "{}", human.stdout);
    assert!(
        human.stdout.contains(" of its chunks reused); "),
        "{}",
        human.stdout
    );

    // Rows committed after the backup reach the repository through the stream only.
    pg.psql("INSERT INTO seed SELECT generate_series(2001, 2500)")
        .unwrap();
    archive_current_wal(&pg, "demo");

    let target = s.path("restored");
    let r = hs_in(
        &s,
        &[
            "restore",
            "demo",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
        &[],
        true,
    )
    .ok();
    assert_eq!(r["backup_id"], backup_id.as_str());
    assert_eq!(r["verified"], true);
    assert_eq!(r["recovery_configured"], true, "{r}");

    // The restored cluster starts, replays the archived WAL through the restore_command
    // the restore wrote (found without ./pg_hardstorage.yaml: the server's working
    // directory is the data directory) and holds every row.
    s.share_with_postgres(true);
    let restored = start_restored(&target);
    assert_eq!(
        restored
            .psql("SELECT count(*), count(DISTINCT id), max(id) FROM seed")
            .unwrap(),
        "2500|2500|2500"
    );
}

/// `doctor demo --exit-on-issues`: exit 10, the named check failed with a fix.
fn expect_issue(s: &Scratch, name: &str) -> Value {
    let human = hs_in(s, &["doctor", "demo", "--exit-on-issues"], &[], false);
    assert_eq!(human.status, 10, "{}\n{}", human.stdout, human.stderr);
    assert!(
        human.stdout.contains(&format!("✗ {name}:")),
        "{name} not failed:\n{}",
        human.stdout
    );
    assert!(human.stdout.contains("Suggested fix:"), "{}", human.stdout);
    assert!(
        human.stdout.contains("Summary: 0 healthy, 1 with issues."),
        "{}",
        human.stdout
    );
    assert!(
        human.stderr.contains("doctor.issues_found"),
        "{}",
        human.stderr
    );
    let r = hs_in(s, &["doctor", "demo", "--exit-on-issues"], &[], true);
    assert_eq!(r.status, 10);
    let doc = r.json();
    assert_eq!(doc["error"]["code"], "doctor.issues_found");
    let c = check(&doc["result"], name).clone();
    assert_eq!(c["state"], "issue", "{doc}");
    assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{doc}");
    // Without --exit-on-issues the report is a success.
    assert_eq!(hs_in(s, &["doctor", "demo"], &[], true).status, 0);
    c
}

#[test]
fn doctor_failure_paths_keyring_slot_and_stopped_server() {
    let mut pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let s = Scratch::new();
    let url = s.repo_url();
    let conn = pg.replication_conninfo();
    let cfg = s.path("pg_hardstorage.yaml");
    hs_in(&s, &["repo", "init", &url], &[], true).ok();
    write(
        &cfg,
        &format!("repo: {url}\ndeployments:\n  demo:\n    pg_connection: \"{conn}\"\n"),
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stream = Streamer::start(&s, "demo", &conn, &url, &[]);
    hs_in(&s, &["backup", "demo"], &[], true).ok();
    wait_doctor_healthy(&s, &["doctor", "demo"]);

    // Keyring readable by others: refused, with the chmod to run.
    let kr = s.keyring();
    std::fs::set_permissions(&kr, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = expect_issue(&s, "keyring");
    assert!(c["fix"].as_str().unwrap().contains("chmod 600"), "{c}");
    std::fs::set_permissions(&kr, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Keyring removed.
    let aside = s.path("keyring.aside");
    std::fs::rename(&kr, &aside).unwrap();
    let c = expect_issue(&s, "keyring");
    assert!(
        c["detail"].as_str().unwrap().contains("notfound.keyring"),
        "{c}"
    );
    std::fs::rename(&aside, &kr).unwrap();
    wait_doctor_healthy(&s, &["doctor", "demo"]);

    // A pack quarantined after the newest backup: take a backup (then healthy again).
    std::thread::sleep(Duration::from_millis(1100));
    let pack = crate::support::files_under(&s.repo_dir().join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let intact = std::fs::read(&pack).unwrap();
    let mut damaged = intact.clone();
    damaged[intact.len() / 3] ^= 0x08;
    std::fs::write(&pack, &damaged).unwrap();
    let q = hs_in(&s, &["repo", "verify", "--quarantine"], &[], true);
    assert_eq!(q.status, 9, "{}", q.stdout);
    assert_eq!(q.err_code(), "verify.pack_corrupt");
    let pack_name = pack
        .strip_prefix(s.repo_dir())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        q.json()["result"]["quarantined"],
        serde_json::json!([pack_name]),
        "{}",
        q.stdout
    );
    std::fs::write(&pack, &intact).unwrap();
    let c = expect_issue(&s, "last_backup");
    assert!(c["detail"].as_str().unwrap().contains("quarantined"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("backup demo"), "{c}");
    std::thread::sleep(Duration::from_millis(1100));
    hs_in(&s, &["backup", "demo"], &[], true).ok();
    wait_doctor_healthy(&s, &["doctor", "demo"]);

    // Slot dropped (the stream must let go of it first).
    drop(stream); // kills the streamer
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg
        .psql("SELECT pg_drop_replication_slot('pg_hardstorage_demo')")
        .is_err()
    {
        assert!(Instant::now() < deadline, "slot stayed active");
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = expect_issue(&s, "slot");
    assert!(
        c["detail"].as_str().unwrap().contains("does not exist"),
        "{c}"
    );
    assert!(
        c["fix"].as_str().unwrap().contains("wal stream demo"),
        "{c}"
    );

    // Server stopped.
    pg.stop().expect("stop PostgreSQL");
    let c = expect_issue(&s, "pg_reachable");
    assert!(c["detail"].as_str().unwrap().contains("unreachable"), "{c}");
    let r = hs_in(&s, &["doctor", "demo"], &[], true).ok();
    assert_eq!(check(&r, "slot")["state"], "skipped");
    // status still answers, showing the server as unreachable.
    let st = hs_in(&s, &["status", "demo"], &[], true).ok();
    assert_eq!(st["deployments"][0]["server"]["reachable"], false, "{st}");
    assert!(st["deployments"][0]["last_backup"]["backup_id"].is_string());
}
