//! libpq multi-host connection strings (issue 19, runbook 6): `host=a,b port=1,2` and
//! `postgresql://u@a:1,b:2/db`, with `target_session_attrs` choosing among the servers
//! in order, for every command that connects; a failover needs no config edit. A real
//! primary and its real standby, then the standby promoted.

use hs_testkit::PgCluster;

use crate::support::{backup, cluster_with, hs, init_repo, Scratch};

/// `doctor` through `conn`: (port, role) of the server it reached.
fn reached(s: &Scratch, url: &str, conn: &str) -> (u64, String) {
    let d = hs(s, &["doctor", "mh", "--pg-connection", conn, "--repo", url]).ok();
    let server = &d["deployments"][0]["server"];
    (
        server["port"].as_u64().unwrap_or_else(|| panic!("{d}")),
        server["role"].as_str().unwrap().to_owned(),
    )
}

fn kv(pw: &str, ports: &[u16], attrs: &str) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "host={hosts} port={} user=hs_repl password={pw} dbname=postgres target_session_attrs={attrs}",
        ports.join(",")
    )
}

fn url_form(pw: &str, ports: &[u16], attrs: &str) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!(
        "postgresql://hs_repl:{pw}@{}/postgres?target_session_attrs={attrs}",
        hosts.join(",")
    )
}

#[test]
fn multi_host_strings_pick_the_server_by_role_and_follow_a_promotion() {
    let mut primary = cluster_with("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id");
    let standby: PgCluster = primary.standby().expect("standby");
    let (p, sb) = (primary.port(), standby.port());
    let pw = primary.replication_password().to_owned();
    let s = Scratch::new();
    let (url, _) = init_repo(&s, &primary);

    // The standby is listed first; read-write and primary skip it, in both forms.
    let primary_role = (u64::from(p), "primary".to_owned());
    let standby_role = (u64::from(sb), "standby".to_owned());
    assert_eq!(
        reached(&s, &url, &kv(&pw, &[sb, p], "read-write")),
        primary_role
    );
    assert_eq!(
        reached(&s, &url, &url_form(&pw, &[sb, p], "primary")),
        primary_role
    );
    assert_eq!(
        reached(&s, &url, &url_form(&pw, &[sb, p], "any")),
        standby_role
    );
    assert_eq!(
        reached(&s, &url, &kv(&pw, &[p, sb], "standby")),
        standby_role
    );
    assert_eq!(
        reached(&s, &url, &kv(&pw, &[p, sb], "prefer-standby")),
        standby_role
    );
    assert_eq!(
        reached(&s, &url, &kv(&pw, &[p], "prefer-standby")),
        primary_role
    );

    // A backup through the multi-host string goes to the primary.
    let conn = url_form(&pw, &[sb, p], "read-write");
    backup(&s, "mh", &conn, &url).ok();

    // Failover: the primary goes away, the standby is promoted; the same string now
    // reaches the promoted server (the unreachable host is skipped), and a backup works.
    primary.stop().expect("stop the primary");
    assert_eq!(standby.psql("SELECT pg_promote()").unwrap(), "t");
    let promoted = (u64::from(sb), "primary".to_owned());
    assert_eq!(reached(&s, &url, &conn), promoted);
    backup(&s, "mh", &conn, &url).ok();

    // Nobody is a standby now: refused with its own code, naming what answered.
    let r = backup(&s, "mh", &kv(&pw, &[sb, p], "standby"), &url);
    assert_eq!(r.status, 8, "{}", r.stdout);
    assert_eq!(r.err_code(), "unreachable.no_matching_server");
    assert!(
        r.stdout.contains(&format!("127.0.0.1:{sb} (primary)")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains(&pw), "no password in the error");
}
