//! Runbook 5 of docs/runbooks.md (the keyring is lost), end to end as written (issue 19):
//! on day one `key generate` makes an offline recovery keyring and `key add` its
//! recipient; an `age-keygen` identity file is a keyring too. Then the host's keyring is
//! lost, and the runbook's commands, run with the default keyring path and
//! ./pg_hardstorage.yaml as a DBA would, bring back a host keyring that verifies,
//! backs up and restores, plus a new offline recovery keyring.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{bin, cluster_with, Run, Scratch};

/// Runs the binary as the runbook does: in the directory of ./pg_hardstorage.yaml, HOME
/// there too (so the keyring is ~/.config/pg_hardstorage/keyring), `-o json`.
fn rb(s: &Scratch, args: &[&str]) -> Run {
    let mut cmd = bin();
    cmd.args(args)
        .args(["-o", "json"])
        .current_dir(s.dir.path())
        .env("HOME", s.path("home"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PG_HARDSTORAGE_CONFIG")
        .env_remove("PG_HARDSTORAGE_KEYRING");
    Run::of(&mut cmd)
}

fn host_keyring(s: &Scratch) -> PathBuf {
    s.path("home/.config/pg_hardstorage/keyring")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Which key objects `key list` says this keyring opens.
fn opens(list: &serde_json::Value) -> usize {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["opens_with_keyring"] == true)
        .count()
}

/// `key generate PATH` then `key add` of its recipient; returns the recipient.
fn generate_and_add(s: &Scratch, path: &Path) -> String {
    let g = rb(s, &["key", "generate", path.to_str().unwrap()]).ok();
    assert_eq!(mode(path), 0o600);
    let r = g["recipient"].as_str().unwrap().to_owned();
    assert!(r.starts_with("age1"), "{g}");
    rb(s, &["key", "add", &r]).ok();
    r
}

#[test]
fn runbook_5_keyring_lost_works_as_written() {
    let pg = cluster_with(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;",
    );
    let s = Scratch::new();
    let url = s.repo_url();
    let conn = pg.replication_conninfo();
    let init = [
        "init",
        "--pg-connection",
        &conn,
        "--repo",
        &url,
        "--deployment",
        "main",
        "--yes",
    ];
    rb(&s, &init).ok();
    assert_eq!(mode(&host_keyring(&s)), 0o600);

    // Day one: an offline recovery keyring, with a copy of the host's signing key.
    let offline = s.path("offline.keyring");
    let g = rb(&s, &["key", "generate", offline.to_str().unwrap()]).ok();
    assert_eq!(g["signing_key_from"], host_keyring(&s).to_str().unwrap());
    rb(&s, &["key", "add", g["recipient"].as_str().unwrap()]).ok();
    // An existing file is never overwritten.
    let again = rb(&s, &["key", "generate", offline.to_str().unwrap()]);
    assert_eq!(
        (again.status, again.err_code()),
        (7, "conflict.keyring_exists".to_owned())
    );

    // An age-keygen identity file (the age identity of another generated keyring, in
    // age-keygen's layout) is a keyring: after `key add` of its public key it opens
    // the repository and restores, but cannot sign backups.
    let spare = s.path("spare.keyring");
    let spare_recipient = generate_and_add(&s, &spare);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spare).unwrap()).unwrap();
    let agefile = s.path("age.key");
    std::fs::write(
        &agefile,
        format!(
            "# created: 2026-12-06T04:00:00Z\n# public key: {spare_recipient}\n{}\n",
            json["age_identity"].as_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&agefile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let age = agefile.to_str().unwrap();
    assert_eq!(opens(&rb(&s, &["key", "list", "--keyring", age]).ok()), 1);
    rb(&s, &["verify", "main", "latest", "--keyring", age]).ok();
    let b = rb(&s, &["backup", "main", "--keyring", age]);
    assert_eq!(
        (b.status, b.err_code()),
        (3, "auth.signing_key_mismatch".to_owned())
    );

    // The host's keyring is lost. `key add` without --keyring now says to pass one.
    std::fs::remove_file(host_keyring(&s)).unwrap();
    let lost = rb(&s, &["key", "add", &spare_recipient]);
    assert_eq!(
        (lost.status, lost.err_code()),
        (6, "notfound.keyring".to_owned())
    );
    let suggestion = lost.json()["error"]["suggestion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(suggestion.contains("--keyring"), "{suggestion}");
    assert!(
        !suggestion.starts_with("run `pg_hardstorage repo init`"),
        "{suggestion}"
    );

    // Runbook 5, "Do:", line by line.
    let found = offline.to_str().unwrap();
    assert_eq!(opens(&rb(&s, &["key", "list", "--keyring", found]).ok()), 1);
    let st = Command::new("install")
        .args(["-m", "600", found, host_keyring(&s).to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let rot = rb(&s, &["key", "rotate"]).ok();
    assert_eq!(rot["removed"].as_array().unwrap().len(), 1, "{rot}");
    let recovery2 = s.path("recovery2.keyring");
    generate_and_add(&s, &recovery2);
    rb(&s, &["verify", "main", "latest"]).ok();
    let b = rb(&s, &["backup", "main"]).ok();

    // The recovery copy that was brought online no longer opens the repository; the
    // new offline one does, and restores the new backup on its own.
    let old = rb(&s, &["key", "list", "--keyring", found]);
    assert_eq!(
        (old.status, old.err_code()),
        (3, "auth.keyring_no_matching_identity".to_owned())
    );
    let r2 = recovery2.to_str().unwrap();
    assert_eq!(opens(&rb(&s, &["key", "list", "--keyring", r2]).ok()), 1);
    let target = s.path("restored");
    let r = rb(
        &s,
        &[
            "restore",
            "main",
            b["backup_id"].as_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "--keyring",
            r2,
        ],
    )
    .ok();
    assert_eq!(r["verified"], true, "{r}");
}
