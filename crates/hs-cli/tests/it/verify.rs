//! `verify`, `repo verify`, `key add|list|rotate` and the security promises, on a
//! backup of a real PostgreSQL cluster: clean data verifies (exit 0); a flipped byte
//! in a pack or a forged manifest is exit 9 naming the object, and restore refuses
//! it without leaving a startable directory; after a key rotation the old keyring no
//! longer opens the repository and restore still works; no plaintext in the repository.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hs_crypt::{Domain, MasterKey};

use crate::support::{
    any_file_contains, backup, cluster_with, files_under, hs, hs_with, human, restore,
    restore_args, Scratch,
};

const SECRET_ROW: &str = "HS_VERIFY_SECRET_ROW_3f9a1c";
const TABLE: &str = "hs_verify_secret_table_77";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap().to_string_lossy().into_owned()
}

/// The master key, unwrapped from whichever key object `keyring` opens.
fn master_key(repo: &Path, keyring: &Path) -> MasterKey {
    let kr = hs_crypt::Keyring::load(keyring).unwrap();
    for p in files_under(&repo.join("keys")) {
        if let Ok(plain) = hs_crypt::unwrap_secret(&std::fs::read(&p).unwrap(), &kr) {
            let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            let hex = v["master_key"].as_str().unwrap();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            return MasterKey::from_bytes(&bytes).unwrap();
        }
    }
    panic!("no key object opens with {}", keyring.display());
}

/// Restores `backup` and expects exit 9 with no startable directory left.
fn restore_must_fail(s: &Scratch, keyring: &Path, url: &str, backup: &str, name: &str) -> String {
    let target = s.path(name);
    let r = hs_with(keyring, &restore_args("demo", backup, &target, url, &[]));
    assert_eq!(r.status, 9, "{}\n{}", r.stdout, r.stderr);
    // Never a directory that looks complete: pg_control is written last.
    assert!(
        !target.join("global/pg_control").exists(),
        "a failed restore left {}/global/pg_control",
        target.display()
    );
    r.err_code()
}

#[test]
fn verify_keys_and_corruption_on_a_real_backup() {
    let pg = cluster_with(&format!(
        "CREATE TABLE {TABLE} (id int primary key, payload text);
         INSERT INTO {TABLE} SELECT g, md5(g::text) || '{SECRET_ROW}' FROM generate_series(1, 20000) g;
         CHECKPOINT;"
    ));
    let relpath = pg
        .psql(&format!("SELECT pg_relation_filepath('{TABLE}')"))
        .expect("relation path")
        .trim()
        .to_owned();
    assert!(relpath.starts_with("base/"), "{relpath}");

    let s = Scratch::new();
    let url = s.repo_url();
    let repo = s.repo_dir();
    hs(&s, &["repo", "init", &url]).ok();
    let conn = pg.replication_conninfo();
    let b = backup(&s, "demo", &conn, &url).ok();
    let backup_id = b["backup_id"].as_str().unwrap().to_owned();

    // Security: no table content, table name, relation path or data directory
    // path in any repository object; keyring and key files are 0600.
    for needle in [
        SECRET_ROW.to_string(),
        TABLE.to_string(),
        relpath.clone(),
        pg.data_dir().display().to_string(),
    ] {
        assert_eq!(
            any_file_contains(&repo, needle.as_bytes()),
            None,
            "{needle:?} found in the repository"
        );
    }
    assert_eq!(mode(&s.keyring()), 0o600);

    // Clean: both checks pass, exit 0.
    let v = hs(&s, &["verify", "demo", "latest", "--repo", &url]).ok();
    assert_eq!(v["ok"], true);
    assert_eq!(v["backup_id"], backup_id.as_str());
    let checks = v["report"]["checks"].as_array().unwrap();
    assert!(checks
        .iter()
        .any(|c| c["name"] == "chunks" && c["checked"].as_u64() > Some(100)));
    assert!(checks.iter().all(|c| c["failed"] == 0));
    let rv = hs(&s, &["repo", "verify", "--repo", &url]).ok();
    assert_eq!(rv["ok"], true);
    // Human output: one line per check with a mark, then a summary.
    let out = human(&s, &["repo", "verify", "--repo", &url]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().filter(|l| l.starts_with('✓')).count() >= 5,
        "{text}"
    );
    assert!(text.contains(": OK"), "{text}");

    // Key add / list: a second operator's keyring opens the repository.
    let other = s.path("other-keyring");
    let other_kr = hs_crypt::Keyring::create(&other).unwrap();
    let added = hs(&s, &["key", "add", &other_kr.recipient(), "--repo", &url]).ok();
    assert_eq!(added["recipient"], other_kr.recipient().as_str());
    let bad = hs(&s, &["key", "add", "age1notarecipient", "--repo", &url]);
    assert_eq!(bad.status, 2);
    assert_eq!(bad.err_code(), "usage.recipient_invalid");
    let keys = hs(&s, &["key", "list", "--repo", &url]).ok();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    hs_with(&other, &["list", "demo", "--repo", &url]).ok();
    // Key objects are age-wrapped (not secret, and the restored server's OS user must
    // read them for restore_command); the keyrings holding the identities are 0600.
    assert_eq!(mode(&other), 0o600);
    assert_eq!(mode(&s.keyring()), 0o600);

    // Rotate: new identity in the same keyring file, the old file kept (0600) and
    // no longer able to open the repository; restore works with the new one.
    let rot = hs(&s, &["key", "rotate", "--repo", &url]).ok();
    let old = PathBuf::from(rot["old_keyring"].as_str().unwrap());
    assert_eq!(rot["keyring"], s.keyring().display().to_string().as_str());
    assert_eq!(mode(&old), 0o600);
    assert_eq!(mode(&s.keyring()), 0o600);
    assert_eq!(rot["removed"].as_array().unwrap().len(), 1);
    // Copies of the old keyring (a restored server's --restore-keyring) stop working.
    assert!(
        rot["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("--restore-keyring")),
        "{rot}"
    );
    let with_old = hs_with(&old, &["list", "demo", "--repo", &url]);
    assert_eq!(with_old.status, 3, "{}", with_old.stdout);
    assert_eq!(with_old.err_code(), "auth.keyring_no_matching_identity");
    hs_with(&other, &["list", "demo", "--repo", &url]).ok();
    let target = s.path("restored");
    let r = restore(&s, "demo", "latest", &target, &url, &[]).ok();
    assert_eq!(r["verified"], true);
    hs(&s, &["repo", "verify", "--repo", &url]).ok();

    // A flipped byte in a pack: verify and repo verify exit 9 naming the pack,
    // restore exits 9 and leaves no pg_control.
    let packs = files_under(&repo.join("data"));
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let pack_name = rel(&repo, &pack);
    let original = std::fs::read(&pack).unwrap();
    let mut damaged = original.clone();
    damaged[original.len() / 3] ^= 0x10;
    std::fs::write(&pack, &damaged).unwrap();
    let v = hs(&s, &["verify", "demo", &backup_id, "--repo", &url]);
    assert_eq!(v.status, 9, "{}", v.stdout);
    assert_eq!(v.err_code(), "verify.chunk_corrupt");
    assert!(
        v.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&pack_name),
        "{}",
        v.stdout
    );
    assert_eq!(v.json()["result"]["ok"], false);
    let rv = hs(&s, &["repo", "verify", "--repo", &url]);
    assert_eq!(rv.status, 9, "{}", rv.stdout);
    assert_eq!(rv.err_code(), "verify.pack_corrupt");
    assert!(rv.stdout.contains(&pack_name));
    let code = restore_must_fail(&s, &s.keyring(), &url, &backup_id, "restored-bad-pack");
    assert_eq!(code, "verify.auth_tag_mismatch");
    // The suggestion points at the quarantine.
    let suggestion = rv.json()["error"]["suggestion"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(suggestion.contains("--quarantine"), "{}", rv.stdout);

    // Quarantine it: still exit 9 (the damage is there), the pack listed, and the next
    // backup stores fresh copies instead of referencing it, so it verifies and restores.
    let q = hs(&s, &["repo", "verify", "--quarantine", "--repo", &url]);
    assert_eq!(q.status, 9, "{}", q.stdout);
    assert_eq!(
        q.json()["result"]["quarantined"],
        serde_json::json!([pack_name])
    );
    let suggestion = q.json()["error"]["suggestion"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(suggestion.contains("new backup"), "{}", q.stdout);
    assert_eq!(
        files_under(&repo.join("quarantine")).len(),
        1,
        "one quarantine record"
    );
    let b2 = backup(&s, "demo", &conn, &url).ok();
    let second = b2["backup_id"].as_str().unwrap().to_owned();
    hs(&s, &["verify", "demo", &second, "--repo", &url]).ok();
    let target2 = s.path("restored-after-quarantine");
    let r2 = restore(&s, "demo", &second, &target2, &url, &[]).ok();
    assert_eq!(r2["verified"], true);
    std::fs::write(&pack, &original).unwrap();

    // A forged manifest (re-sealed by someone with the master key, keeping the old
    // signature): exit 9, signature; restore refuses it.
    let manifest = repo.join(format!("deployments/demo/backups/{backup_id}"));
    let sealed = std::fs::read(&manifest).unwrap();
    let mk = master_key(&repo, &s.keyring());
    let plain = mk.open(Domain::Manifest, &sealed).unwrap();
    let json = hs_chunk::decompress(&plain[65..], 1 << 30).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&json).unwrap();
    m["label"] = serde_json::Value::from("forged");
    let mut forged = plain[..65].to_vec();
    forged.extend_from_slice(&hs_chunk::compress(&serde_json::to_vec(&m).unwrap(), 3));
    std::fs::write(&manifest, mk.seal(Domain::Manifest, &forged)).unwrap();
    let v = hs(&s, &["verify", "demo", &backup_id, "--repo", &url]);
    assert_eq!(v.status, 9, "{}", v.stdout);
    assert_eq!(v.err_code(), "verify.manifest_signature");
    assert!(v.stdout.contains(&backup_id));
    let code = restore_must_fail(&s, &s.keyring(), &url, &backup_id, "restored-forged");
    assert_eq!(code, "verify.signature_invalid");

    // A flipped byte in the manifest object itself.
    let mut flipped = sealed.clone();
    flipped[sealed.len() / 2] ^= 1;
    std::fs::write(&manifest, &flipped).unwrap();
    let v = hs(&s, &["verify", "demo", &backup_id, "--repo", &url]);
    assert_eq!(v.status, 9);
    assert_eq!(v.err_code(), "verify.manifest_corrupt");
    std::fs::write(&manifest, &sealed).unwrap();
    hs(&s, &["verify", "demo", &backup_id, "--repo", &url]).ok();
}
