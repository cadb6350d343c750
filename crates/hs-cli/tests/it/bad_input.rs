//! Bad input through the real binary: malformed repository URLs, conninfo strings, LSNs,
//! times, names, backup ids, config files and keyrings. Each case must end with its
//! documented dotted code, the exit code of that code's namespace, a suggestion, and
//! never a panic. Human output is checked too: `error[<code>]` on stderr.

use std::os::unix::fs::PermissionsExt;

use crate::support::{hs, human, Run, Scratch};

/// A repository and keyring that exist, so that the input under test is what fails.
struct Fixture {
    s: Scratch,
    url: String,
}

impl Fixture {
    fn new() -> Fixture {
        let s = Scratch::new();
        let url = s.repo_url();
        hs(&s, &["repo", "init", &url]).ok();
        Fixture { s, url }
    }
}

fn no_panic(what: &str, r: &Run) {
    for text in [&r.stdout, &r.stderr] {
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "{what}: the binary panicked\nstdout:\n{}\nstderr:\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// Runs `args` with `-o json` and requires `code` (and its exit code, a suggestion, no
/// panic); then runs them again with human output and requires `error[code]` on stderr.
fn expect_code(s: &Scratch, what: &str, args: &[&str], code: &str) {
    let r = hs(s, args);
    no_panic(what, &r);
    let got = r.err_code();
    assert_eq!(
        got, code,
        "{what}: args {args:?}\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    let human = human(s, args);
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert_eq!(
        human.status.code(),
        Some(r.status),
        "{what}: human exit code"
    );
    // clap reports its own errors (`error: ...` and a usage line) in human mode.
    let expected = if code == "usage.invalid_arguments" {
        "error:".to_owned()
    } else {
        format!("error[{code}]")
    };
    assert!(
        stderr.contains(&expected),
        "{what}: human output lacks {expected}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
}

#[test]
fn malformed_repository_urls_are_usage_errors() {
    let f = Fixture::new();
    let s = &f.s;
    expect_code(
        s,
        "repo init \"\"",
        &["repo", "init", ""],
        "usage.invalid_url",
    );
    let cases: &[(&str, &str)] = &[
        ("not a url", "usage.invalid_url"),
        ("/var/lib/repo", "usage.invalid_url"),
        ("file://relative/path", "usage.invalid_url"),
        ("file:///tmp/x?query=1", "usage.invalid_url"),
        ("ftp://host/repo", "usage.unsupported_scheme"),
        ("HTTP://host/repo", "usage.unsupported_scheme"),
        ("://nothing", "usage.unsupported_scheme"),
    ];
    for (url, code) in cases {
        expect_code(
            s,
            &format!("repo init {url:?}"),
            &["repo", "init", url],
            code,
        );
        expect_code(
            s,
            &format!("list --repo {url:?}"),
            &["list", "demo", "--repo", url],
            code,
        );
    }
}

#[test]
fn malformed_conninfo_is_conninfo_invalid() {
    let f = Fixture::new();
    let cases = [
        "host='unterminated",
        "nokeyword",
        "host=h port=notaport",
        "host=h port=99999999",
        "sslmode=sometimes",
        "bogus_key=1",
        "postgresql://[::1",
        "postgresql://h:notaport/db",
        "postgresql://user%zz@h/db",
        "postgresql://h/db?sslmode=maybe",
        "postgresql://h/db?unknown_param=1",
        "channel_binding=perhaps",
    ];
    for conn in cases {
        expect_code(
            &f.s,
            &format!("backup --pg-connection {conn:?}"),
            &["backup", "demo", "--pg-connection", conn, "--repo", &f.url],
            "usage.conninfo_invalid",
        );
        expect_code(
            &f.s,
            &format!("wal preflight --pg-connection {conn:?}"),
            &["wal", "preflight", "demo", "--pg-connection", conn],
            "usage.conninfo_invalid",
        );
    }
}

#[test]
fn malformed_restore_targets_and_names_are_usage_errors() {
    let f = Fixture::new();
    let target = f.s.path("restored");
    let target = target.to_str().expect("utf-8 path");
    let restore = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["restore", "demo", "latest", "--target", target, "--repo"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(f.url.clone());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: &[(&[&str], &str)] = &[
        (&["--to-lsn", "0/ZZ"], "usage.lsn_invalid"),
        (&["--to-lsn", "12345"], "usage.lsn_invalid"),
        (&["--to-lsn", "1FFFFFFFF/0"], "usage.lsn_invalid"),
        (&["--to-lsn", "/"], "usage.lsn_invalid"),
        (&["--to-lsn", ""], "usage.lsn_invalid"),
        (&["--to", "tomorrowish"], "usage.target_time_invalid"),
        (&["--to", "2026-13-45 10:00"], "usage.target_time_invalid"),
        (&["--to", "5 fortnights ago"], "usage.target_time_invalid"),
        (
            &["--to", "99999999999999 seconds ago"],
            "usage.target_time_invalid",
        ),
        (&["--to", ""], "usage.target_time_invalid"),
        (
            &["--to-name", &"x".repeat(200)],
            "usage.restore_point_name_invalid",
        ),
        (&["--to-timeline", "zero"], "usage.timeline_invalid"),
        (&["--to-timeline", "0"], "usage.timeline_invalid"),
        // clap's own checks: unknown flag, a conflict, a bad enum value.
        (
            &["--to-lsn", "0/1", "--to-name", "x"],
            "usage.invalid_arguments",
        ),
        (&["--no-such-flag"], "usage.invalid_arguments"),
        (&["--verify", "sometimes"], "usage.invalid_arguments"),
    ];
    for (extra, code) in cases {
        let args = restore(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_code(&f.s, &format!("restore {extra:?}"), &args, code);
    }
    assert!(
        !f.s.path("restored").exists(),
        "a failed restore wrote its target"
    );
}

#[test]
fn malformed_deployment_names_and_backup_ids_are_usage_errors() {
    let f = Fixture::new();
    let t = f.s.path("t");
    let t = t.to_str().expect("utf-8 path");
    let long = "a".repeat(49);
    for name in [
        "Demo",
        "",
        "a/b",
        "../x",
        "_x",
        "demo db",
        long.as_str(),
        "démo",
    ] {
        let cases: Vec<Vec<&str>> = vec![
            vec!["list", name, "--repo", &f.url],
            vec!["wal", "list", name, "--repo", &f.url],
            vec![
                "backup",
                name,
                "--pg-connection",
                "host=h",
                "--repo",
                &f.url,
            ],
            vec!["restore", name, "latest", "--target", t, "--repo", &f.url],
        ];
        for args in cases {
            expect_code(
                &f.s,
                &format!("deployment {name:?}"),
                &args,
                "usage.deployment_invalid",
            );
        }
    }
    for id in ["../../etc/passwd", "a/b", "x y", "", "..", "ab\\cd"] {
        expect_code(
            &f.s,
            &format!("backup id {id:?}"),
            &["restore", "demo", id, "--target", t, "--repo", &f.url],
            "usage.invalid_backup_id",
        );
    }
    // A well-formed id that does not exist.
    expect_code(
        &f.s,
        "missing backup",
        &[
            "restore",
            "demo",
            "20260101T000000Z",
            "--target",
            t,
            "--repo",
            &f.url,
        ],
        "notfound.backup",
    );
    // Flag values clap checks.
    expect_code(
        &f.s,
        "max-rate out of range",
        &[
            "backup",
            "demo",
            "--pg-connection",
            "host=h",
            "--repo",
            &f.url,
            "--max-rate",
            "1",
        ],
        "usage.invalid_arguments",
    );
    // A partial interval out of range says what is allowed ("0 is not between 0 and
    // 3600" read as if 0 were allowed).
    for bad in [
        "--partial-interval=0",
        "--partial-interval=-1",
        "--partial-interval=4000",
    ] {
        let args = [
            "wal",
            "stream",
            "demo",
            "--pg-connection",
            "host=127.0.0.1 port=1",
            "--repo",
            &f.url,
            bad,
        ];
        expect_code(
            &f.s,
            "partial interval",
            &args,
            "usage.partial_interval_invalid",
        );
        let message = hs(&f.s, &args).json()["error"]["message"].to_string();
        assert!(
            message.contains("must be more than 0 and at most 3600 seconds"),
            "{message}"
        );
    }
}

#[test]
fn bad_keyrings_fail_with_their_codes() {
    let f = Fixture::new();
    let good = std::fs::read(f.s.keyring()).expect("keyring");
    let write = |bytes: &[u8], mode: u32| {
        std::fs::write(f.s.keyring(), bytes).expect("write keyring");
        std::fs::set_permissions(f.s.keyring(), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    };
    let list = ["list", "demo", "--repo", f.url.as_str()];
    // Truncated at several points, empty, binary garbage, wrong JSON shape.
    for cut in [0, 1, good.len() / 3, good.len() / 2, good.len() - 2] {
        write(&good[..cut], 0o600);
        expect_code(
            &f.s,
            &format!("keyring cut at {cut}"),
            &list,
            "usage.keyring_invalid",
        );
    }
    write(&[0xff, 0xfe, 0x00, 0x80, 0x81], 0o600);
    expect_code(&f.s, "binary keyring", &list, "usage.keyring_invalid");
    write(br#"{"version": 1}"#, 0o600);
    expect_code(&f.s, "keyring without keys", &list, "usage.keyring_invalid");
    // Readable by others.
    write(&good, 0o644);
    expect_code(
        &f.s,
        "keyring mode 0644",
        &list,
        "preflight.keyring_permissions",
    );
    // Absent.
    std::fs::remove_file(f.s.keyring()).expect("rm keyring");
    expect_code(&f.s, "no keyring", &list, "notfound.keyring");
    // The keyring of another repository.
    let other = Scratch::new();
    hs(&other, &["repo", "init", &other.repo_url()]).ok();
    std::fs::copy(other.keyring(), f.s.keyring()).expect("copy keyring");
    std::fs::set_permissions(f.s.keyring(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    expect_code(
        &f.s,
        "keyring of another repository",
        &list,
        "auth.keyring_no_matching_identity",
    );
    // The right one works again.
    write(&good, 0o600);
    hs(&f.s, &list).ok();
    // The right keyring, but its key object in the repository is damaged: exit 9 naming
    // the object, not a keyring complaint.
    let keys = f.s.repo_dir().join("keys");
    let key = std::fs::read_dir(&keys)
        .expect("keys/")
        .next()
        .expect("a key object")
        .expect("dir entry")
        .path();
    let intact = std::fs::read(&key).expect("read key object");
    let mut damaged = intact.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x20;
    std::fs::write(&key, &damaged).expect("damage key object");
    let r = hs(&f.s, &list);
    no_panic("damaged key object", &r);
    assert_eq!(r.status, 9, "{}", r.stdout);
    assert_eq!(
        r.json()["error"]["code"],
        "verify.key_object_invalid",
        "{}",
        r.stdout
    );
    let name = format!("keys/{}", key.file_name().unwrap().to_string_lossy());
    assert!(r.stdout.contains(&name), "{}", r.stdout);
    std::fs::write(&key, &intact).expect("restore key object");
    hs(&f.s, &list).ok();
}

#[test]
fn repositories_that_are_not_there_or_not_repositories() {
    let f = Fixture::new();
    let missing = format!("file://{}", f.s.path("nowhere").display());
    expect_code(
        &f.s,
        "missing repository",
        &["list", "demo", "--repo", &missing],
        "notfound.repo",
    );
    // A directory with a garbage marker.
    let junk = f.s.path("junk");
    std::fs::create_dir(&junk).expect("mkdir");
    let marker = hs_repo::MARKER_NAME;
    std::fs::write(junk.join(marker), b"\x00not a marker\xff").expect("write marker");
    let junk_url = format!("file://{}", junk.display());
    let r = hs(&f.s, &["list", "demo", "--repo", &junk_url]);
    no_panic("garbage marker", &r);
    assert_eq!(r.status, 9, "{}", r.stdout);
    assert_eq!(
        r.json()["error"]["code"],
        "verify.marker_invalid",
        "{}",
        r.stdout
    );
    // It names the object and says what to do.
    let e = &r.json()["error"];
    assert!(
        e["message"].as_str().unwrap_or("").contains(marker),
        "{}",
        r.stdout
    );
    assert!(
        e["suggestion"]
            .as_str()
            .unwrap_or("")
            .contains("copy of the repository"),
        "{}",
        r.stdout
    );
    // repo init on an existing repository.
    expect_code(
        &f.s,
        "init twice",
        &["repo", "init", &f.url],
        "conflict.repo_exists",
    );
}

#[test]
fn garbage_config_files_are_config_invalid() {
    let f = Fixture::new();
    let cfg = f.s.path("pg_hardstorage.yaml");
    let cfg_arg = cfg.to_str().expect("utf-8 path").to_owned();
    let cases: &[(&str, &[u8])] = &[
        ("not YAML", b": : :\n\t- [unclosed\n"),
        ("a list at the top", b"- a\n- b\n"),
        ("an unknown key", b"no_such_setting: 1\n"),
        ("deployments of the wrong type", b"deployments: 5\n"),
        (
            "a deployment with an unknown key",
            b"deployments:\n  demo:\n    colour: blue\n",
        ),
        (
            "an invalid deployment name",
            b"deployments:\n  Bad-Name:\n    repo: file:///tmp/x\n",
        ),
        ("a repo that is no URL", b"repo: not-a-url\n"),
        (
            "a number where text belongs",
            b"deployments:\n  demo:\n    pg_connection: [1, 2]\n",
        ),
        (
            "a bad duration",
            b"deployments:\n  demo:\n    backup_max_age: soon\n",
        ),
        ("deep nesting", &[b'['; 4096]),
    ];
    for (what, text) in cases {
        std::fs::write(&cfg, text).expect("write config");
        expect_code(
            &f.s,
            &format!("config with {what}"),
            &["--config", &cfg_arg, "list", "demo", "--repo", &f.url],
            "usage.config_invalid",
        );
    }
    std::fs::remove_file(&cfg).expect("rm config");
    expect_code(
        &f.s,
        "a missing config file",
        &["--config", &cfg_arg, "list", "demo", "--repo", &f.url],
        "notfound.config",
    );
    // Binary garbage or Latin-1 text: not UTF-8, so an invalid config (exit 2) that says
    // where, never a read failure, a panic or an internal error.
    for (what, bytes) in [
        ("binary", &[0xffu8, 0x00, 0xfe, b':', 0x80][..]),
        ("Latin-1", &b"repo: file:///srv/sauvegard\xe9\n"[..]),
    ] {
        std::fs::write(&cfg, bytes).expect("write config");
        let r = hs(
            &f.s,
            &["--config", &cfg_arg, "list", "demo", "--repo", &f.url],
        );
        no_panic(what, &r);
        assert_eq!(r.status, 2, "{what}: {}", r.stdout);
        assert_eq!(r.err_code(), "usage.config_invalid", "{what}");
        assert!(r.stdout.contains("UTF-8"), "{what}: {}", r.stdout);
    }
}
