//! Damage reports that help (issue 13, item 6), on backups of a real PostgreSQL cluster:
//!
//! - `list --check` lists a backup whose manifest is damaged as damaged (object and code)
//!   and the others normally, exit 0 (plain `list` trusts the catalog for a manifest
//!   whose size did not change);
//! - `restore latest` / `verify latest` never fall back silently: a damaged newest
//!   manifest is refused with `verify.latest_backup_damaged`, naming the object and the
//!   newest intact backup; a damaged older one does not stop `latest`;
//! - a damaged pack: `verify` and `restore` name the pack, the chunk and the file of the
//!   backup being read; `repo verify` reports the pack once with the backups that read
//!   damaged chunks from it;
//! - runbook 4 followed step by step: `repo verify --quarantine`, a new backup, and
//!   `repo verify` is clean, the older backups verify and restore (pg_verifybackup
//!   passes) when the cluster still holds their data; when it does not (the table
//!   changed), `repo verify` keeps the problem, names the backups that cannot heal and
//!   does not suggest `--quarantine` again.

use std::collections::HashSet;
use std::path::Path;

use hs_repo::{ChunkId, Repository};
use hs_testkit::{PgCluster, PgOptions};
use serde_json::Value;

use crate::support::{cluster_with, hs, human, init_repo, Run, Scratch};

const DEP: &str = "demo";

fn backup(s: &Scratch, conn: &str, url: &str) -> String {
    crate::support::backup(s, DEP, conn, url).ok()["backup_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn manifest_object(id: &str) -> String {
    format!("deployments/{DEP}/backups/{id}")
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

fn restore(s: &Scratch, url: &str, backup: &str, name: &str) -> Run {
    let target = s.path(name);
    crate::support::restore(s, DEP, backup, &target, url, &[])
}

fn message(r: &Run) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn suggestion(r: &Run) -> String {
    r.json()["error"]["suggestion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_damaged_manifest_is_listed_as_damaged_and_latest_never_falls_back_silently() {
    let pg =
        cluster_with("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g; CHECKPOINT;");
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    let b1 = backup(&s, &conn, &url);
    let b2 = backup(&s, &conn, &url);
    let b3 = backup(&s, &conn, &url);
    assert!(b1 < b2 && b2 < b3, "{b1} {b2} {b3}");

    // A damaged middle manifest: `list --check` (which opens every manifest) lists it as
    // damaged, the others listed; exit 0. Plain `list` reads the deployment's catalog and
    // opens only manifests it does not hold or whose size changed: a manifest damaged in
    // place is shown from the catalog (verify and repo verify open every manifest).
    let m2 = s.repo_dir().join(manifest_object(&b2));
    let len = std::fs::metadata(&m2).unwrap().len() as usize;
    flip(&m2, len / 2);
    let plain = hs(&s, &["list", DEP, "--repo", &url]).ok();
    assert_eq!(plain["backups"].as_array().unwrap().len(), 3, "{plain}");
    assert_eq!(plain["damaged"], 0, "{plain}");
    let l = hs(&s, &["list", DEP, "--check", "--repo", &url]).ok();
    let rows = l["backups"].as_array().unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b1.as_str(), b2.as_str(), b3.as_str()], "{l}");
    assert_eq!(rows[0]["status"], "ok");
    assert!(rows[0]["start_lsn"]
        .as_str()
        .is_some_and(|x| x.contains('/')));
    assert_eq!(rows[1]["status"], "damaged", "{l}");
    assert_eq!(rows[1]["object"], manifest_object(&b2).as_str());
    assert_eq!(rows[1]["error_code"], "verify.auth_tag_mismatch", "{l}");
    assert_eq!(rows[2]["status"], "ok");
    assert_eq!(l["damaged"], 1);
    // Human output: the damaged one is marked and named.
    let human = human(&s, &["list", DEP, "--check", "--repo", &url]);
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&b2) && l.contains("DAMAGED")),
        "{text}"
    );
    assert!(text.contains(&manifest_object(&b2)), "{text}");
    // b3's row is intact: the line under it gives its WAL range (LSNs `X/Y`).
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&b3));
    assert!(lines.next().is_some_and(|l| l.contains("full")), "{text}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.contains(" WAL ") && l.contains('/')),
        "{text}"
    );

    // `latest` is the newest backup, intact: the damaged older one does not stop it.
    let v = hs(&s, &["verify", DEP, "latest", "--repo", &url]).ok();
    assert_eq!(v["backup_id"], b3.as_str());
    // Naming the damaged one: its object and its code.
    let r = restore(&s, &url, &b2, "restored-b2");
    assert_eq!(r.status, 9, "{}", r.stdout);
    assert_eq!(r.err_code(), "verify.auth_tag_mismatch");
    assert!(message(&r).contains(&manifest_object(&b2)), "{}", r.stdout);
    assert!(!s.path("restored-b2").join("global/pg_control").exists());

    // The newest manifest damaged: `latest` refuses, names it and the newest intact one.
    let m3 = s.repo_dir().join(manifest_object(&b3));
    let len = std::fs::metadata(&m3).unwrap().len() as usize;
    flip(&m3, len / 3);
    let v = hs(&s, &["verify", DEP, "latest", "--repo", &url]);
    assert_eq!(v.status, 9, "{}", v.stdout);
    assert_eq!(v.err_code(), "verify.latest_backup_damaged");
    assert!(message(&v).contains(&manifest_object(&b3)), "{}", v.stdout);
    assert!(suggestion(&v).contains(&b1), "{}", v.stdout);
    let r = restore(&s, &url, "latest", "restored-latest");
    assert_eq!(r.status, 9, "{}", r.stdout);
    assert_eq!(r.err_code(), "verify.latest_backup_damaged");
    assert!(message(&r).contains(&manifest_object(&b3)), "{}", r.stdout);
    assert!(suggestion(&r).contains(&b1), "{}", r.stdout);
    assert!(!s.path("restored-latest").join("global/pg_control").exists());
    // The explicit id the suggestion names restores.
    let ok = restore(&s, &url, &b1, "restored-b1").ok();
    assert_eq!(ok["backup_id"], b1.as_str());
    assert_eq!(ok["verified"], true);
    let l = hs(&s, &["list", DEP, "--check", "--repo", &url]).ok();
    let st: Vec<&str> = l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, ["ok", "damaged", "damaged"], "{l}");
}

/// Opens the scratch repository with the library (to find what to damage).
fn open(s: &Scratch, rt: &tokio::runtime::Runtime) -> Repository {
    let kr = hs_crypt::Keyring::load(&s.keyring()).unwrap();
    rt.block_on(Repository::open(&s.repo_url(), &kr)).unwrap()
}

/// The chunk ids of file `rel` (a path in the base archive) of backup `id`.
fn file_chunk_ids(
    repo: &Repository,
    rt: &tokio::runtime::Runtime,
    id: &str,
    rel: &str,
) -> HashSet<ChunkId> {
    rt.block_on(async {
        let m = repo.load_manifest(DEP, id).await.unwrap();
        let reader = repo.reader().await.unwrap();
        let f = m.archives[0]
            .files
            .iter()
            .find(|f| f.path == rel)
            .unwrap_or_else(|| panic!("{rel} not in backup {id}"));
        reader
            .file_chunks(f)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    })
}

/// A frame (pack name, offset of a byte in its middle, its chunk ids) whose chunks all
/// belong to `ids`, in a pack other than `not_in`.
fn frame_of(
    repo: &Repository,
    rt: &tokio::runtime::Runtime,
    ids: &HashSet<ChunkId>,
    not_in: Option<&str>,
) -> (String, usize, Vec<ChunkId>) {
    rt.block_on(async {
        let mut packs = repo.list_packs().await.unwrap();
        packs.sort_by(|a, b| a.name.cmp(&b.name));
        for p in packs {
            if Some(p.name.as_str()) == not_in {
                continue;
            }
            let entries = repo.read_pack_header(&p.name).await.unwrap();
            let mut offsets: Vec<u32> = entries.iter().map(|e| e.frame_offset).collect();
            offsets.dedup();
            for off in offsets {
                let frame: Vec<_> = entries.iter().filter(|e| e.frame_offset == off).collect();
                if frame.len() >= 4 && frame.iter().all(|e| ids.contains(&e.id)) {
                    let mid = off as usize + frame[0].frame_length as usize / 2;
                    return (p.name.clone(), mid, frame.iter().map(|e| e.id).collect());
                }
            }
        }
        panic!("no frame made only of the table's chunks")
    })
}

fn problems_for<'a>(v: &'a Value, object: &str) -> Vec<&'a Value> {
    v["report"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["object"] == object)
        .collect()
}

fn backups_of(p: &Value) -> Vec<String> {
    p["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_damaged_pack_names_pack_chunk_file_and_backups_and_runbook_4_heals_what_it_can() {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec!["autovacuum = off".into()],
        ..PgOptions::default()
    })
    .expect("start PostgreSQL");
    // Two tables of incompressible-ish rows: `steady` never changes, `moving` is
    // rewritten after the third backup.
    for sql in [
        "CREATE TABLE steady (id int, payload text)",
        "INSERT INTO steady SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 150000) g",
        "CREATE TABLE moving (id int, payload text)",
        "INSERT INTO moving SELECT g, md5((g * 3)::text) || md5((g * 11)::text) FROM generate_series(1, 150000) g",
        "VACUUM (FREEZE, ANALYZE)",
        "CHECKPOINT",
    ] {
        pg.psql(sql).unwrap();
    }
    let steady = pg
        .psql("SELECT pg_relation_filepath('steady')")
        .unwrap()
        .trim()
        .to_owned();
    let moving = pg
        .psql("SELECT pg_relation_filepath('moving')")
        .unwrap()
        .trim()
        .to_owned();
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    let b1 = backup(&s, &conn, &url);
    let b2 = backup(&s, &conn, &url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let repo = open(&s, &rt);
    let steady_ids = file_chunk_ids(&repo, &rt, &b1, &steady);
    assert_eq!(steady_ids, file_chunk_ids(&repo, &rt, &b2, &steady));
    let (pack, at, frame) = frame_of(&repo, &rt, &steady_ids, None);
    // For later: a frame of `moving` in another pack (so no copy of it is made when the
    // first pack's chunks are stored again).
    let moving_ids = file_chunk_ids(&repo, &rt, &b1, &moving);
    let (pack2, at2, _) = frame_of(&repo, &rt, &moving_ids, Some(&pack));
    flip(&s.repo_dir().join(&pack), at);
    let frame_hex: Vec<String> = frame.iter().map(ToString::to_string).collect();

    // verify names the pack, a chunk of the damaged frame and the file; exact code.
    let v = hs(&s, &["verify", DEP, &b1, "--repo", &url]);
    assert_eq!(v.status, 9, "{}", v.stdout);
    assert_eq!(v.err_code(), "verify.chunk_corrupt");
    let msg = message(&v);
    assert!(msg.contains(&pack), "{msg}");
    assert!(frame_hex.iter().any(|c| msg.contains(c)), "{msg}");
    assert!(msg.contains(&steady), "{msg}");
    // restore names them too, and the backup.
    let r = restore(&s, &url, &b2, "restored-damaged");
    assert_eq!(r.status, 9, "{}", r.stdout);
    assert_eq!(r.err_code(), "verify.auth_tag_mismatch");
    let msg = message(&r);
    assert!(msg.contains(&pack), "{msg}");
    assert!(frame_hex.iter().any(|c| msg.contains(c)), "{msg}");
    assert!(msg.contains(&steady), "{msg}");
    assert!(msg.contains(&b2), "{msg}");
    assert!(!s
        .path("restored-damaged")
        .join("global/pg_control")
        .exists());

    // repo verify: the pack once, with the two backups that read it; --quarantine advised.
    let rv = hs(&s, &["repo", "verify", "--repo", &url]);
    assert_eq!(rv.status, 9, "{}", rv.stdout);
    assert_eq!(rv.err_code(), "verify.pack_corrupt");
    let res = rv.json()["result"].clone();
    let ps = problems_for(&res, &pack);
    assert_eq!(ps.len(), 1, "{res}");
    assert_eq!(ps[0]["code"], "verify.pack_corrupt");
    assert_eq!(ps[0]["quarantined"], false);
    assert_eq!(
        backups_of(ps[0]),
        [format!("{DEP}/{b1}"), format!("{DEP}/{b2}")]
    );
    assert!(ps[0]["message"].as_str().unwrap().contains(&b1), "{res}");
    let packs_check = res["report"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "packs")
        .unwrap()
        .clone();
    assert_eq!(packs_check["failed"], 1, "{res}");
    assert!(suggestion(&rv).contains("--quarantine"), "{}", rv.stdout);

    // Runbook 4: quarantine, new backup, repo verify is clean.
    let q = hs(&s, &["repo", "verify", "--quarantine", "--repo", &url]);
    assert_eq!(q.status, 9, "{}", q.stdout);
    assert_eq!(q.json()["result"]["quarantined"], serde_json::json!([pack]));
    let b3 = backup(&s, &conn, &url);
    let clean = hs(&s, &["repo", "verify", "--repo", &url]).ok();
    assert_eq!(clean["ok"], true, "{clean}");
    assert!(
        clean["report"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "verify.pack_quarantined" && w["object"] == pack.as_str()),
        "{clean}"
    );
    hs(&s, &["verify", DEP, &b1, "--repo", &url]).ok();
    hs(&s, &["verify", DEP, &b2, "--repo", &url]).ok();
    for (id, name) in [(&b1, "healed-b1"), (&b2, "healed-b2")] {
        let r = restore(&s, &url, id, name).ok();
        assert_eq!(r["verified"], true, "pg_verifybackup ran and passed: {r}");
    }

    // Damage that cannot heal: `moving` is rewritten, then a frame of its old content
    // (held by b1..b3) is damaged. Quarantine and a new backup do not bring it back.
    for sql in [
        "UPDATE moving SET payload = payload || 'changed'",
        "VACUUM FULL moving",
        "CHECKPOINT",
    ] {
        pg.psql(sql).unwrap();
    }
    let b4 = backup(&s, &conn, &url);
    flip(&s.repo_dir().join(&pack2), at2);
    hs(&s, &["repo", "verify", "--quarantine", "--repo", &url]);
    let b5 = backup(&s, &conn, &url);
    let rv = hs(&s, &["repo", "verify", "--repo", &url]);
    assert_eq!(rv.status, 9, "{}", rv.stdout);
    assert_eq!(rv.err_code(), "verify.pack_corrupt");
    let res = rv.json()["result"].clone();
    let ps = problems_for(&res, &pack2);
    assert_eq!(ps.len(), 1, "{res}");
    assert_eq!(ps[0]["quarantined"], true);
    assert_eq!(
        backups_of(ps[0]),
        [
            format!("{DEP}/{b1}"),
            format!("{DEP}/{b2}"),
            format!("{DEP}/{b3}")
        ]
    );
    let sug = suggestion(&rv);
    assert!(!sug.contains("--quarantine"), "{sug}");
    assert!(sug.contains("cannot"), "{sug}");
    // The first pack is still only a warning.
    assert!(problems_for(&res, &pack).is_empty(), "{res}");
    // The backups taken after the change are intact.
    hs(&s, &["verify", DEP, &b4, "--repo", &url]).ok();
    hs(&s, &["verify", DEP, &b5, "--repo", &url]).ok();
    let v = hs(&s, &["verify", DEP, &b3, "--repo", &url]);
    assert_eq!(v.status, 9, "{}", v.stdout);
    assert_eq!(v.err_code(), "verify.chunk_corrupt");
    assert!(message(&v).contains(&pack2), "{}", v.stdout);
    assert!(message(&v).contains(&moving), "{}", v.stdout);
}
