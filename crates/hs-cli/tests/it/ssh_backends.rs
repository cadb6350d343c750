//! Backup then restore through the real binary on sftp:// and scp:// repositories served by
//! a real OpenSSH sshd on 127.0.0.1 (scp:// against an sshd without the SFTP subsystem).

use hs_testkit::{sshd_or_skip, PgCluster, SshdOptions};

use crate::support::{any_file_contains, backup, cluster_with, files_under, hs, restore, Scratch};

const MARKER: &str = "HS_SSH_PLAINTEXT_MARKER_5c1e";
const CHECK: &str =
    "SELECT count(*), sum(length(payload)), md5(string_agg(payload, ',' ORDER BY id)) FROM t";

fn round_trip(scheme: &str, sftp_subsystem: bool) {
    let test = format!("{scheme}_backup_restore_round_trip");
    let Some(sshd) = sshd_or_skip(
        &test,
        SshdOptions {
            sftp: sftp_subsystem,
        },
    ) else {
        return;
    };
    let pg = cluster_with(&format!(
        "CREATE TABLE t (id int primary key, payload text);
         INSERT INTO t SELECT g, md5(g::text) || '{MARKER}' FROM generate_series(1, 50000) g;
         CHECKPOINT;"
    ));
    let expected = pg.psql(CHECK).expect("checksum");

    let s = Scratch::new();
    let remote_dir = s.path("remote");
    let url = sshd.url(scheme, remote_dir.to_str().unwrap());
    hs(&s, &["repo", "init", &url]).ok();
    let again = hs(&s, &["repo", "init", &url]);
    assert_eq!(again.status, 7, "{}", again.stdout);
    assert_eq!(again.err_code(), "conflict.repo_exists");

    let conn = pg.replication_conninfo();
    let b = backup(&s, "demo", &conn, &url).ok();
    let id = b["backup_id"].as_str().expect("backup id").to_owned();
    // The repository really is on the remote side, and holds no plaintext.
    assert!(
        files_under(&remote_dir).len() > 3,
        "{remote_dir:?} holds almost nothing"
    );
    assert_eq!(any_file_contains(&remote_dir, MARKER.as_bytes()), None);

    let list = hs(&s, &["list", "demo", "--repo", &url]).ok();
    assert_eq!(list["backups"].as_array().map(Vec::len), Some(1));

    let target = s.path("restored");
    let r = restore(&s, "demo", &id, &target, &url, &[]).ok();
    assert_eq!(r["verified"], true);

    drop(pg);
    let restored = PgCluster::start_existing(&target).expect("start restored cluster");
    assert_eq!(restored.psql(CHECK).expect("query restored"), expected);
}

#[test]
fn sftp_backup_restore_round_trip() {
    round_trip("sftp", true);
}

#[test]
fn scp_backup_restore_round_trip_without_sftp_subsystem() {
    round_trip("scp", false);
}

#[test]
fn ssh_repo_errors_map_to_exit_codes() {
    let Some(sshd) = sshd_or_skip("ssh_repo_errors_map_to_exit_codes", SshdOptions::default())
    else {
        return;
    };
    let s = Scratch::new();
    let remote = s.path("remote");
    let r = remote.to_str().unwrap();
    // Wrong host key: auth, exit 3.
    let url = format!(
        "sftp://{}@127.0.0.1:{}{r}?key={}&known_hosts={}",
        sshd.user(),
        sshd.port(),
        sshd.client_key().display(),
        sshd.wrong_known_hosts().display()
    );
    let run = hs(&s, &["repo", "init", &url]);
    assert_eq!(run.status, 3, "{}", run.stdout);
    assert_eq!(run.err_code(), "auth.ssh_host_key");
    // Nothing listening: unreachable, exit 8.
    let port = hs_testkit::free_port().unwrap();
    let url = format!(
        "scp://{}@127.0.0.1:{port}{r}?key={}&known_hosts={}&connect_timeout=3",
        sshd.user(),
        sshd.client_key().display(),
        sshd.known_hosts().display()
    );
    let run = hs(&s, &["repo", "init", &url]);
    assert_eq!(run.status, 8, "{}", run.stdout);
    assert_eq!(run.err_code(), "unreachable.ssh");
    // A bad URL: usage, exit 2.
    let run = hs(&s, &["repo", "init", "sftp://host-without-path"]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    assert_eq!(run.err_code(), "usage.invalid_url");
}
