//! Verification and key management on real file:// repositories: a clean
//! repository verifies clean; random byte flips and truncations in every kind
//! of object are always reported with the object's name; the chunk reader
//! never returns damaged data; a forged manifest fails its signature; key
//! add / list / rotate keep the repository openable and the data unchanged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hs_crypt::{Domain, Keyring, MasterKey};
use hs_repo::{Repository, WalGap};

use crate::support::{file, files_under, manifest_of, noise, page, Env};

const MIB: u64 = 1 << 20;
const DEP: &str = "demo";
const BACKUP: &str = "20261126T050000Z";
const SEG_SIZE: usize = MIB as usize;

/// A repository with packs, index objects, one manifest (a short file, a long
/// one stored through chunk lists), WAL segments, a partial, a history file,
/// a gap record and a summary. Returns the repository and the original
/// file contents by path.
async fn populated(env: &Env) -> (Repository, Vec<(String, Vec<u8>)>) {
    let repo = env.small_pack_repo().await;
    let mut w = repo.writer().await.unwrap();
    let mut long = Vec::new();
    let mut long_data = Vec::new();
    for i in 0..300u64 {
        let d = if i % 4 == 0 { noise(i, 8192) } else { page(i) };
        long.push(w.add(Bytes::from(d.clone())).await.unwrap());
        long_data.extend_from_slice(&d);
    }
    let short_data = noise(99, 20_000);
    let short = vec![w.add(Bytes::from(short_data.clone())).await.unwrap()];
    let mut long_entry = file("base/1/16384", long);
    w.store_chunk_list(&mut long_entry).await.unwrap();
    assert!(!long_entry.chunk_lists.is_empty());
    w.finish().await.unwrap();
    let m = manifest_of(
        DEP,
        BACKUP,
        // Inside segment 2 of timeline 1 (1 MiB segments).
        ("0/200028", "0/200100"),
        (
            "2026-11-26T05:00:00Z".to_string(),
            "2026-11-26T05:00:01Z".to_string(),
        ),
        vec![file("global/pg_control", short), long_entry],
    );
    repo.put_manifest(&m).await.unwrap();
    for seg in 1..=2u8 {
        let name = format!("0000000100000000000000{seg:02X}");
        let data = noise(u64::from(seg), SEG_SIZE);
        repo.put_wal_segment(DEP, &name, &data).await.unwrap();
    }
    repo.put_wal_partial(DEP, "000000010000000000000003", &noise(3, 5000))
        .await
        .unwrap();
    repo.put_timeline_history(DEP, 2, b"1\t0/3000000\tno recovery target specified\n")
        .await
        .unwrap();
    repo.put_wal_gap(
        DEP,
        &WalGap {
            from_segment: "000000010000000000000005".to_string(),
            to_segment: "000000010000000000000006".to_string(),
            reason: "test".to_string(),
            recorded_at: "2026-11-26T05:00:00Z".to_string(),
        },
    )
    .await
    .unwrap();
    repo.put_wal_summary(
        DEP,
        "000000010000000000000001",
        b"hs-wal-summary 1\nend 0/100000\n",
    )
    .await
    .unwrap();
    let files = vec![
        ("global/pg_control".to_string(), short_data),
        ("base/1/16384".to_string(), long_data),
    ];
    (repo, files)
}

/// Object names (relative, `/`-separated) under the repository, by kind.
fn objects(root: &Path, kind: &str) -> Vec<String> {
    files_under(root)
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .filter(|n| match kind {
            "pack" => n.starts_with("data/"),
            "index" => n.starts_with("index/"),
            "key" => n.starts_with("keys/"),
            "keyinfo" => n.starts_with("keyinfo/"),
            "manifest" => n.contains("/backups/"),
            "segment" => n.contains("/wal/0000") && !n.ends_with(".partial"),
            "partial" => n.ends_with(".partial"),
            "history" => n.contains("/wal/history/"),
            "gap" => n.contains("/wal/gaps/"),
            "summary" => n.contains("/wal/summaries/"),
            "marker" => n == "config",
            "catalog" => n.contains("/catalog/"),
            _ => false,
        })
        .collect()
}

/// A tiny deterministic generator for the random test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[tokio::test]
async fn clean_repository_verifies_clean() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let r = repo.verify_repo().await.unwrap();
    assert!(r.is_ok(), "{:#?}", r.problems);
    assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "marker",
            "keys",
            "packs",
            "index",
            "manifests",
            "catalogs",
            "wal"
        ]
    );
    assert!(
        r.checks.iter().all(|c| c.failed == 0 && c.checked > 0),
        "{:#?}",
        r.checks
    );
    assert!(r.to_error().is_none());

    let b = repo.verify_backup(DEP, BACKUP).await.unwrap();
    assert!(b.is_ok(), "{:#?}", b.problems);
    let chunks = b.checks.iter().find(|c| c.name == "chunks").unwrap();
    assert_eq!(chunks.checked, 301);
    let wal = b.checks.iter().find(|c| c.name == "wal").unwrap();
    assert_eq!(wal.checked, 1);

    // A backup that does not exist is not a verification problem.
    assert_eq!(
        repo.verify_backup(DEP, "nope").await.unwrap_err().code(),
        "notfound.backup"
    );
}

/// `verify` compares PostgreSQL's `backup_manifest` with the stored files (what
/// `pg_verifybackup` checks first after a restore): a size that differs, a listed
/// file that is not stored, an `INCREMENTAL.*` member stored as such.
#[tokio::test]
async fn a_backup_manifest_that_disagrees_with_the_files_is_reported() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let mut w = repo.writer().await.unwrap();
    let data = vec![w.add(Bytes::from(noise(1, 8192))).await.unwrap()];
    w.finish().await.unwrap();
    let files = vec![
        file("base/1/16384", data.clone()),
        file("base/1/INCREMENTAL.16385", data),
    ];
    let times = (
        "2026-11-26T05:00:00Z".to_string(),
        "2026-11-26T05:00:01Z".to_string(),
    );
    let listing = |size: u64, extra: &str| {
        format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 2, \"Files\": [{{ \"Path\": \"base/1/16384\", \"Size\": {size} }}{extra}] }}"
        )
    };
    let cases = [
        ("20261126T050000Z", listing(8192, ""), 1),
        ("20261126T050001Z", listing(8191, ""), 2),
        (
            "20261126T050002Z",
            listing(8192, ", { \"Path\": \"global/1262\", \"Size\": 0 }"),
            2,
        ),
    ];
    for (id, pg, problems) in cases {
        let mut m = manifest_of(
            DEP,
            id,
            ("0/200028", "0/200100"),
            times.clone(),
            files.clone(),
        );
        m.pg_backup_manifest = pg;
        repo.put_manifest(&m).await.unwrap();
        let b = repo.verify_backup(DEP, id).await.unwrap();
        let bad: Vec<_> = b
            .problems
            .iter()
            .filter(|p| p.code == "verify.manifest_invalid")
            .collect();
        // Problems of one code and object are counted in one entry.
        let count: u64 = bad.iter().map(|p| p.count).sum();
        assert_eq!(count, problems, "{id}: {:#?}", b.problems);
        assert!(
            bad.iter().any(|p| p.message.contains("INCREMENTAL.16385")),
            "{bad:#?}"
        );
        let check = b
            .checks
            .iter()
            .find(|c| c.name == "backup_manifest")
            .unwrap();
        assert_eq!(check.failed, problems, "{check:#?}");
    }
}

#[tokio::test]
async fn random_damage_in_any_object_is_always_reported_by_name() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let root = env.repo_path();
    let kinds = [
        "pack", "index", "manifest", "segment", "partial", "key", "keyinfo", "history", "gap",
        "summary", "marker",
    ];
    let mut rng = Rng(0x5eed_1234_9876_abcd);
    let mut cases = 0;
    for round in 0..4 {
        for kind in kinds {
            let list = objects(&root, kind);
            assert!(!list.is_empty(), "no {kind} objects");
            let name = &list[rng.below(list.len() as u64) as usize];
            let path = root.join(name);
            let original = std::fs::read(&path).unwrap();
            let mut damaged = original.clone();
            let what = if round % 2 == 0 {
                let i = rng.below(damaged.len() as u64) as usize;
                let flip = (rng.below(255) + 1) as u8;
                damaged[i] ^= flip;
                format!("flipped byte {i} with {flip:#x}")
            } else {
                let n = rng.below(damaged.len() as u64) as usize;
                damaged.truncate(n);
                format!("truncated to {n} bytes")
            };
            std::fs::write(&path, &damaged).unwrap();
            let r = repo.verify_repo().await.unwrap();
            // Each kind of object has its code.
            let code = match kind {
                "pack" => "verify.pack_corrupt",
                "index" => "verify.index_corrupt",
                "manifest" => "verify.manifest_corrupt",
                "key" | "keyinfo" => "verify.key_object_invalid",
                "marker" => "verify.marker_invalid",
                _ => "verify.wal_corrupt",
            };
            assert!(
                r.problems
                    .iter()
                    .any(|p| &p.object == name && p.code == code),
                "{kind} {name}: {what}: not reported as {code}: {:#?}",
                r.problems
            );
            let e = r.to_error().unwrap();
            assert!(e.to_string().contains(name.as_str()), "{e}");
            std::fs::write(&path, &original).unwrap();
            cases += 1;
        }
    }
    assert_eq!(cases, 44);
    assert!(repo.verify_repo().await.unwrap().is_ok());
}

#[tokio::test]
async fn damage_in_a_pack_fails_the_backup_and_names_the_pack() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let root = env.repo_path();
    // Flip a byte in the middle of the blob area of every pack in turn.
    for name in objects(&root, "pack") {
        let path = root.join(&name);
        let original = std::fs::read(&path).unwrap();
        let mut damaged = original.clone();
        damaged[original.len() / 3] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        let r = repo.verify_backup(DEP, BACKUP).await.unwrap();
        assert!(!r.is_ok(), "{name}");
        assert!(
            r.problems
                .iter()
                .any(|p| p.object == name && p.code == "verify.chunk_corrupt"),
            "{name}: {:#?}",
            r.problems
        );
        let e = r.to_error().unwrap();
        assert_eq!(e.code(), "verify.chunk_corrupt");
        assert!(e.to_string().contains(&name), "{e}");
        std::fs::write(&path, &original).unwrap();
    }

    // A missing pack: the chunks it held are missing for the backup, and
    // the whole-repository check names the pack the index points at.
    let name = objects(&root, "pack").remove(0);
    let path = root.join(&name);
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let r = repo.verify_repo().await.unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.object == name && p.code == "verify.pack_missing"),
        "{:#?}",
        r.problems
    );
    std::fs::write(&path, &original).unwrap();
}

#[tokio::test]
async fn missing_wal_for_consistency_is_reported() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let seg = env
        .repo_path()
        .join("deployments/demo/wal/00000001/000000010000000000000002");
    std::fs::remove_file(&seg).unwrap();
    let r = repo.verify_backup(DEP, BACKUP).await.unwrap();
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    assert_eq!(r.problems[0].code, "verify.wal_missing");
    assert_eq!(
        r.problems[0].object,
        "deployments/demo/wal/00000001/000000010000000000000002"
    );
    assert_eq!(r.to_error().unwrap().code(), "verify.wal_missing");
}

#[tokio::test]
async fn unindexed_pack_is_a_warning_not_a_problem() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    // A writer that crashed after uploading packs but before its index object
    // leaves the same state as this: new packs, their index object removed.
    let before = objects(&env.repo_path(), "index");
    let mut w = repo.writer().await.unwrap();
    for i in 0..200u64 {
        w.add(Bytes::from(noise(10_000 + i, 8192))).await.unwrap();
    }
    w.finish().await.unwrap();
    for idx in objects(&env.repo_path(), "index") {
        if !before.contains(&idx) {
            std::fs::remove_file(env.repo_path().join(idx)).unwrap();
        }
    }
    let r = repo.verify_repo().await.unwrap();
    assert!(r.is_ok(), "{:#?}", r.problems);
    assert!(
        r.warnings.iter().any(|w| w.code == "verify.pack_unindexed"),
        "{:#?}",
        r.warnings
    );
}

/// The stored-chunk check of `verify_repo` is a sorted merge; with tiny runs it goes
/// through many temporary files (and merge levels) and finds the same things: format 2
/// references are found in the headers of the packs they name when no index object is
/// left, and a reference to a pack that is gone is a missing chunk of its backup.
#[tokio::test]
async fn stored_chunk_check_merges_through_temp_files() {
    std::env::set_var("HS_SORT_RUN_BYTES", "400");
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let root = env.repo_path();
    assert!(repo.verify_repo().await.unwrap().is_ok());
    for idx in objects(&root, "index") {
        std::fs::remove_file(root.join(idx)).unwrap();
    }
    let r = repo.verify_repo().await.unwrap();
    assert!(r.is_ok(), "{:#?}", r.problems);
    let packs = objects(&root, "pack");
    assert!(packs.len() > 1);
    assert_eq!(
        r.warnings
            .iter()
            .filter(|w| w.code == "verify.pack_unindexed")
            .count(),
        packs.len()
    );
    // The long file's chunks are spread over the packs: any one pack gone loses some.
    std::fs::remove_file(root.join(&packs[0])).unwrap();
    let r = repo.verify_repo().await.unwrap();
    let manifest = format!("deployments/{DEP}/backups/{BACKUP}");
    // One problem for the backup's missing chunks; when the pack held one of its list
    // chunks, that list is also reported, under the pack's name.
    let missing: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.code == "verify.chunk_missing" && p.object == manifest)
        .collect();
    assert_eq!(missing.len(), 1, "{:#?}", r.problems);
    assert!(
        r.problems
            .iter()
            .all(|p| p.code == "verify.chunk_missing"
                && (p.object == manifest || p.object == packs[0])),
        "{:#?}",
        r.problems
    );
    assert_eq!(missing[0].object, manifest);
    assert!(
        missing[0].message.contains(&packs[0]),
        "{}",
        missing[0].message
    );
    assert_eq!(missing[0].backups, vec![format!("{DEP}/{BACKUP}")]);
}

/// A damaged backup catalog is a warning naming it (readers fall back to the manifests),
/// and the listing still shows the backup.
#[tokio::test]
async fn damaged_catalog_is_a_warning_naming_it() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let root = env.repo_path();
    let catalogs = objects(&root, "catalog");
    assert_eq!(catalogs.len(), 1, "{catalogs:?}");
    let path = root.join(&catalogs[0]);
    let mut data = std::fs::read(&path).unwrap();
    let i = data.len() / 2;
    data[i] ^= 0x20;
    std::fs::write(&path, &data).unwrap();
    let r = repo.verify_repo().await.unwrap();
    assert!(r.is_ok(), "{:#?}", r.problems);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.code == "verify.catalog_invalid" && w.object == catalogs[0]),
        "{:#?}",
        r.warnings
    );
    let listing = repo.list_backup_summaries_cataloged(DEP).await.unwrap();
    assert_eq!(listing.backups.len(), 1);
    assert_eq!(listing.backups[0].backup_id, BACKUP);
}

/// The repository's master key, unwrapped the way `open` does (for forging).
fn master_key(env: &Env) -> MasterKey {
    let key = objects(&env.repo_path(), "key").remove(0);
    let wrapped = std::fs::read(env.repo_path().join(key)).unwrap();
    let plain = hs_crypt::unwrap_secret(&wrapped, &env.keyring).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    MasterKey::from_bytes(&hex_decode(v["master_key"].as_str().unwrap())).unwrap()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn forged_manifest_fails_its_signature() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let path = env
        .repo_path()
        .join(format!("deployments/{DEP}/backups/{BACKUP}"));
    // Someone with the master key but not the signing key edits the manifest
    // and re-seals it, keeping the old signature.
    let mk = master_key(&env);
    let plain = mk
        .open(Domain::Manifest, &std::fs::read(&path).unwrap())
        .unwrap();
    let json = hs_chunk::decompress(&plain[65..], 1 << 30).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&json).unwrap();
    m["label"] = serde_json::Value::from("forged");
    let body = hs_chunk::compress(&serde_json::to_vec(&m).unwrap(), 3);
    let mut forged = plain[..65].to_vec();
    forged.extend_from_slice(&body);
    std::fs::write(&path, mk.seal(Domain::Manifest, &forged)).unwrap();

    assert_eq!(
        repo.load_manifest(DEP, BACKUP).await.unwrap_err().code(),
        "verify.signature_invalid"
    );
    let r = repo.verify_backup(DEP, BACKUP).await.unwrap();
    assert_eq!(r.problems[0].code, "verify.manifest_signature");
    assert_eq!(
        r.problems[0].object,
        format!("deployments/{DEP}/backups/{BACKUP}")
    );
    let r = repo.verify_repo().await.unwrap();
    assert!(r
        .problems
        .iter()
        .any(|p| p.code == "verify.manifest_signature"));
}

#[tokio::test]
async fn chunk_reader_never_returns_damaged_data() {
    let env = Env::new();
    let (repo, files) = populated(&env).await;
    let m = repo.load_manifest(DEP, BACKUP).await.unwrap();
    let root = env.repo_path();
    let mut rng = Rng(77);
    for round in 0..12 {
        let packs = objects(&root, "pack");
        let name = &packs[rng.below(packs.len() as u64) as usize];
        let path = root.join(name);
        let original = std::fs::read(&path).unwrap();
        let mut damaged = original.clone();
        let i = rng.below(damaged.len() as u64) as usize;
        damaged[i] ^= (rng.below(255) + 1) as u8;
        std::fs::write(&path, &damaged).unwrap();
        // A fresh reader each time: nothing is cached from before the damage.
        let reader = match repo.reader().await {
            Ok(r) => r,
            Err(e) => panic!("round {round}: the index is intact: {e}"),
        };
        for (f, (path_name, data)) in m.archives[0].files.iter().zip(&files) {
            assert_eq!(&f.path, path_name);
            // A flipped byte in a frame fails its authentication (named: pack and
            // chunk); one elsewhere (header, trailer) is not read by the reader at all.
            let refs = match reader.file_chunks(f).await {
                Ok(r) => r,
                Err(e) => {
                    assert_eq!(e.code(), "verify.auth_tag_mismatch", "{e}");
                    assert!(e.to_string().contains(name.as_str()), "{e}");
                    continue;
                }
            };
            let mut off = 0usize;
            for r in refs {
                match reader.read(&r).await {
                    Ok(d) => assert_eq!(&d[..], &data[off..off + d.len()], "round {round}"),
                    Err(e) => {
                        assert_eq!(e.code(), "verify.auth_tag_mismatch", "{e}");
                        assert!(e.to_string().contains(name.as_str()), "{e}");
                        assert!(e.to_string().contains(&r.id.to_string()), "{e}");
                    }
                }
                off += r.len as usize;
            }
        }
        std::fs::write(&path, &original).unwrap();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn key_add_list_and_rotate() {
    let env = Env::new();
    let (repo, _) = populated(&env).await;
    let first = repo.list_keys().await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].opens_with_keyring);
    assert_eq!(
        first[0].recipient.as_deref(),
        Some(env.keyring.recipient().as_str())
    );

    // Another operator's keyring.
    let other_path = env.dir.path().join("other").join("keyring");
    let other = Keyring::create(&other_path).unwrap();
    assert_eq!(
        repo.add_key("age1nope").await.unwrap_err().code(),
        "usage.recipient_invalid"
    );
    let added = repo.add_key(&other.recipient()).await.unwrap();
    assert!(!added.opens_with_keyring);
    let keys = repo.list_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let theirs = keys.iter().find(|k| k.name == added.name).unwrap();
    assert_eq!(
        theirs.recipient.as_deref(),
        Some(other.recipient().as_str())
    );
    assert!(!theirs.opens_with_keyring);
    let as_other = Repository::open(&env.url, &other).await.unwrap();
    assert_eq!(as_other.id(), repo.id());
    assert!(as_other.verify_backup(DEP, BACKUP).await.unwrap().is_ok());

    // Rotate our keyring: a new identity, the old file kept, our old key object gone.
    let kr_path: PathBuf = env.keyring.path().to_path_buf();
    let old_recipient = env.keyring.recipient();
    let rot = repo.rotate_keyring(None).await.unwrap();
    assert_eq!(rot.keyring, kr_path);
    assert_eq!(rot.old_recipient, old_recipient);
    assert_ne!(rot.new_recipient, old_recipient);
    assert_eq!(rot.removed, vec![first[0].name.clone()]);
    assert!(rot.old_keyring.exists());
    assert_eq!(mode(&rot.old_keyring), 0o600);
    assert_eq!(mode(&kr_path), 0o600);

    let new_kr = Keyring::load(&kr_path).unwrap();
    assert_eq!(new_kr.recipient(), rot.new_recipient);
    let old_kr = Keyring::load(&rot.old_keyring).unwrap();
    assert_eq!(old_kr.recipient(), old_recipient);
    // Same signing key, so new backups still sign with the recorded key.
    assert_eq!(
        new_kr.signing_key().verifying_key(),
        old_kr.signing_key().verifying_key()
    );
    assert!(Repository::open(&env.url, &old_kr)
        .await
        .unwrap_err()
        .code()
        .starts_with("auth."));
    let reopened = Repository::open(&env.url, &new_kr).await.unwrap();
    assert!(reopened.verify_backup(DEP, BACKUP).await.unwrap().is_ok());
    assert!(reopened.verify_repo().await.unwrap().is_ok());
    // The other operator's key object survives rotation.
    assert!(Repository::open(&env.url, &other).await.is_ok());
    let keys = reopened.list_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k.opens_with_keyring).count(), 1);
    // The repository can still take a backup with the rotated keyring.
    let m = reopened.load_manifest(DEP, BACKUP).await.unwrap();
    let mut m2 = m.clone();
    m2.backup_id = "20261126T060000Z".to_string();
    reopened.put_manifest(&m2).await.unwrap();
    // Nothing readable by the old identity is left.
    for k in objects(&env.repo_path(), "key") {
        let wrapped = std::fs::read(env.repo_path().join(&k)).unwrap();
        assert!(hs_crypt::unwrap_secret(&wrapped, &old_kr).is_err(), "{k}");
    }
}
