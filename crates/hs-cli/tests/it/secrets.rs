//! Secrets never leave in output: a role with a distinctive password runs backup, a short
//! `wal stream`, list, `wal list` and restore with `-vv` and with `-o json`; neither the
//! password nor the keyring's secret keys appear in any stdout or stderr, and the password
//! is in no file of the repository.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{any_file_contains, bin, json_command, Scratch};

/// Everything the binary printed in this test, with the command that printed it.
struct Transcript {
    outputs: Vec<(String, String)>,
}

impl Transcript {
    fn run(&mut self, s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> i32 {
        let out = bin()
            .args(args)
            .arg("--keyring")
            .arg(s.keyring())
            .envs(env.iter().copied())
            .output()
            .expect("run pg_hardstorage");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.outputs.push((args.join(" "), text));
        out.status.code().unwrap_or(-1)
    }

    fn must_not_contain(&self, what: &str, secret: &str) {
        assert!(secret.len() >= 8, "{what}: too short to search for");
        for (cmd, text) in &self.outputs {
            assert!(
                !text.contains(secret),
                "{what} appears in the output of `{cmd}`:\n{text}"
            );
        }
    }
}

/// The value of `"key": "value"` in the keyring's JSON text.
fn json_str(text: &str, key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).expect("keyring is JSON");
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("keyring has no {key}"))
        .to_owned()
}

#[test]
fn passwords_and_keys_never_appear_in_output_or_repository() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let password = format!("Zebra-Quartz-{}-Secret", std::process::id());
    pg.psql(&format!(
        "CREATE ROLE hs_secret LOGIN REPLICATION PASSWORD '{password}'"
    ))
    .expect("create role");
    pg.pgbench(&["-i", "-s", "1", "-q"]).expect("pgbench -i");
    let url_conn = format!(
        "postgresql://hs_secret:{password}@127.0.0.1:{}/postgres",
        pg.port()
    );
    let kv_conn = format!(
        "host=127.0.0.1 port={} user=hs_secret dbname=postgres password='{password}'",
        pg.port()
    );
    let env_conn = format!(
        "host=127.0.0.1 port={} user=hs_secret dbname=postgres",
        pg.port()
    );
    let s = Scratch::new();
    let repo = s.repo_url();
    let mut t = Transcript {
        outputs: Vec::new(),
    };

    assert_eq!(t.run(&s, &["repo", "init", &repo, "-vv"], &[]), 0);
    for fmt in ["json", "human"] {
        let o = ["-o", fmt, "-vv"];
        let with_password = [("PGPASSWORD", password.as_str())];
        // The password in a URL, in key=value form, and in the environment.
        for (conn, env) in [
            (&url_conn, &[][..]),
            (&kv_conn, &[][..]),
            (&env_conn, &with_password[..]),
        ] {
            let mut backup = vec!["backup", "demo", "--pg-connection", conn, "--repo", &repo];
            backup.extend(o);
            assert_eq!(t.run(&s, &backup, env), 0, "{:?}", t.outputs.last());
        }
        let mut pre = vec!["wal", "preflight", "demo", "--pg-connection", &url_conn];
        pre.extend(o);
        t.run(&s, &pre, &[]);
        // A wrong password: the error must not echo it either.
        let wrong = format!("Wrong-{password}");
        let bad = format!(
            "postgresql://hs_secret:{wrong}@127.0.0.1:{}/postgres",
            pg.port()
        );
        let mut b = vec!["backup", "demo", "--pg-connection", &bad, "--repo", &repo];
        b.extend(o);
        assert_eq!(t.run(&s, &b, &[]), 3, "{:?}", t.outputs.last());
        t.must_not_contain("the wrong password", &wrong);
    }

    // A short `wal stream` with debug logs, stopped with SIGTERM once a segment is archived.
    let args = [
        "wal",
        "stream",
        "demo",
        "--pg-connection",
        &url_conn,
        "--repo",
        &repo,
        "-vv",
    ];
    let child = json_command(&args, &s.keyring())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wal stream");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = pg
            .psql("SELECT count(*) FROM pg_replication_slots WHERE active")
            .unwrap_or_default();
        if n == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "wal stream did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.psql("SELECT pg_switch_wal()").expect("switch");
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let out = child.wait_with_output().expect("wal stream output");
    t.outputs.push((
        "wal stream".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ));
    assert!(
        t.outputs.last().is_some_and(|(_, o)| o.contains("DEBUG")),
        "-vv printed no debug log"
    );

    for fmt in ["json", "human"] {
        assert_eq!(
            t.run(
                &s,
                &["list", "demo", "--repo", &repo, "-vv", "-o", fmt],
                &[]
            ),
            0
        );
        assert_eq!(
            t.run(
                &s,
                &["wal", "list", "demo", "--repo", &repo, "-vv", "-o", fmt],
                &[]
            ),
            0
        );
        let target = s.path(&format!("restored-{fmt}"));
        let code = t.run(
            &s,
            &[
                "restore",
                "demo",
                "latest",
                "--no-recovery",
                "--target",
                target.to_str().expect("utf-8"),
                "--repo",
                &repo,
                "-vv",
                "-o",
                fmt,
            ],
            &[],
        );
        assert_eq!(code, 0, "{:?}", t.outputs.last());
    }

    t.must_not_contain("the role's password", &password);
    let keyring = std::fs::read_to_string(s.keyring()).expect("keyring");
    let identity = json_str(&keyring, "age_identity");
    let signing = json_str(&keyring, "signing_key");
    t.must_not_contain("the keyring's age identity", &identity);
    t.must_not_contain(
        "the keyring's age identity (lowercase)",
        &identity.to_lowercase(),
    );
    t.must_not_contain("the keyring's signing key", &signing);
    t.must_not_contain(
        "the keyring's signing key (uppercase)",
        &signing.to_uppercase(),
    );
    if let Some(p) = any_file_contains(&s.repo_dir(), password.as_bytes()) {
        panic!("the password is stored in {}", p.display());
    }
    if let Some(p) = any_file_contains(&s.repo_dir(), signing.as_bytes()) {
        panic!("the signing key is stored in {}", p.display());
    }
}
