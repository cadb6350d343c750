//! The fuzz targets' committed corpora, replayed in CI: every file under
//! `fuzz/corpus/<target>/` goes through the same function the libFuzzer target calls
//! (`fuzz/src/lib.rs`, included here), so a crash input added to a corpus is a regression
//! test from then on. `cargo xtask fuzz` runs the real fuzzers (not in CI).
//!
//! The seed corpora come from real artifacts, made by the ignored test
//! `write_fuzz_seed_corpus` (run it with `cargo nextest run -p hs-cli --run-ignored only
//! fuzz_corpus`): server bytes of a real replication session, GNU tar and
//! `pg_basebackup -Ft` archives, WAL segments of a real cluster, packs and index objects
//! built by hs-chunk, and a manifest of a real backup. Seeds of older formats, still read,
//! keep a `-v1` suffix: those of packs and index objects come from the generator, the
//! manifest and list chunk `-v1` files are the seeds an earlier generator wrote. The
//! `backup` session (`session0-*`) is lz4-compressed since the server compresses its
//! archives; `session0-plain-*` are the plain stream (a server without lz4, `--max-rate`),
//! as an earlier generator recorded it.

use std::path::{Path, PathBuf};

#[path = "../../../../fuzz/src/lib.rs"]
mod hs_fuzz;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_committed_fuzz_input_runs_without_panic() {
    for (name, target) in hs_fuzz::TARGETS {
        let dir = corpus_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {} is empty", dir.display());
        for f in &files {
            let data = std::fs::read(f).expect("read corpus file");
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "fuzz target {name} panicked on {}", f.display());
        }
    }
}

mod seeds {
    //! The seed corpus generator (ignored: it rewrites files in the source tree).

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use hs_chunk::{ChunkId, IdWidth, PackBuilder, PackFormat};
    use hs_testkit::{PgCluster, PgOptions};

    use super::corpus_dir;
    use crate::support::{backup, hs, Scratch, Streamer};

    fn put(target: &str, name: &str, data: &[u8]) {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).expect("mkdir corpus");
        std::fs::write(dir.join(name), data).expect("write seed");
    }

    /// A TCP proxy in front of PostgreSQL that records what the server sends.
    fn record_server_bytes(pg_port: u16) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        let sessions: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let rec = sessions.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let server = TcpStream::connect(("127.0.0.1", pg_port)).expect("connect pg");
                let idx = {
                    let mut s = rec.lock().expect("lock");
                    s.push(Vec::new());
                    s.len() - 1
                };
                let (mut c_r, mut s_w) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_r, &mut s_w);
                });
                let (mut s_r, mut c_w) = (server, client);
                let rec = rec.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = s_r.read(&mut buf) {
                        if n == 0 || c_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let mut s = rec.lock().expect("lock");
                        if s[idx].len() < 64 << 20 {
                            s[idx].extend_from_slice(&buf[..n]);
                        }
                    }
                });
            }
        });
        (port, sessions)
    }

    /// Backend messages (tag, length) of `raw`, each CopyData body cut to `max_copy` bytes.
    fn trim_messages(raw: &[u8], max_copy: usize, max_total: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 5 <= raw.len() && out.len() < max_total {
            let tag = raw[i];
            let len = u32::from_be_bytes([raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4]]) as usize;
            if len < 4 || i + 1 + len > raw.len() {
                break;
            }
            let body = &raw[i + 5..i + 1 + len];
            let body = if tag == b'd' {
                &body[..body.len().min(max_copy)]
            } else {
                body
            };
            out.push(tag);
            out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            out.extend_from_slice(body);
            i += 1 + len;
        }
        out
    }

    #[test]
    #[ignore = "writes the seed corpora into fuzz/corpus; run by hand"]
    fn write_fuzz_seed_corpus() {
        let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
        pg.pgbench(&["-i", "-s", "1", "-q"]).expect("pgbench -i");
        pg.psql("SELECT pg_create_restore_point('seed_point')")
            .expect("restore point");
        let s = Scratch::new();
        let url = s.repo_url();
        hs(&s, &["repo", "init", &url]).ok();

        // proto_codec: what a real server sends during `backup` and `wal stream`.
        let (proxy, sessions) = record_server_bytes(pg.port());
        let conn = format!(
            "postgresql://{}:{}@127.0.0.1:{proxy}/postgres?sslmode=disable",
            hs_testkit::REPLICATION_USER,
            pg.replication_password()
        );
        backup(&s, "demo", &conn, &url).ok();
        let streamer = Streamer::start(&s, "demo", &conn, &url, &[]);
        std::thread::sleep(Duration::from_secs(2));
        pg.pgbench(&["-n", "-t", "20"]).expect("pgbench");
        pg.psql("SELECT pg_switch_wal()").expect("switch");
        std::thread::sleep(Duration::from_secs(2));
        drop(streamer);
        let sessions = sessions.lock().expect("lock").clone();
        for (i, raw) in sessions.iter().enumerate() {
            put(
                "proto_codec",
                &format!("session{i}-head"),
                &raw[..raw.len().min(4096)],
            );
            put(
                "proto_codec",
                &format!("session{i}-trimmed"),
                &trim_messages(raw, 96, 6144),
            );
        }

        // tar_parser: GNU tar (ustar, long names, pax) and the head of a pg_basebackup tar.
        let src = s.path("tarsrc");
        let long = "d".repeat(60);
        std::fs::create_dir_all(src.join(&long).join(&long)).expect("mkdir");
        std::fs::write(src.join("PG_VERSION"), "15\n").expect("write");
        std::fs::write(
            src.join(&long).join(&long).join("file_with_a_long_path"),
            vec![7u8; 700],
        )
        .expect("write");
        std::fs::write(src.join("empty"), b"").expect("write");
        std::os::unix::fs::symlink("/var/lib/tblspc", src.join("16384")).expect("symlink");
        for (fmt, step) in [("ustar", 0u8), ("gnu", 3), ("pax", 40)] {
            let tar = s.path(&format!("seed-{fmt}.tar"));
            let ok = Command::new("tar")
                .arg(format!("--format={fmt}"))
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&src)
                .arg(".")
                .status()
                .expect("tar")
                .success();
            if !ok && fmt == "ustar" {
                continue; // the long path does not fit ustar
            }
            let mut data = vec![step];
            data.extend(std::fs::read(&tar).expect("read tar"));
            put("tar_parser", &format!("gnu-tar-{fmt}"), &data);
        }
        let bb = s.path("bb");
        pg.client_command("pg_basebackup")
            .arg("-d")
            .arg(pg.superuser_conninfo())
            .arg("-D")
            .arg(&bb)
            .args(["-Ft", "-X", "none"])
            .status()
            .expect("pg_basebackup")
            .success()
            .then_some(())
            .expect("pg_basebackup failed");
        let base = std::fs::read(bb.join("base.tar")).expect("base.tar");
        let mut head = vec![1u8];
        head.extend_from_slice(&base[..base.len().min(6144)]);
        put("tar_parser", "pg_basebackup-head", &head);
        let mut tail = vec![200u8];
        tail.extend_from_slice(&base[base.len().saturating_sub(3072)..]);
        put("tar_parser", "pg_basebackup-tail", &tail);

        // wal_segment: the first pages of real segments, a history file, a setting.
        let wal_dir = pg.data_dir().join("pg_wal");
        let mut segs: Vec<_> = std::fs::read_dir(&wal_dir)
            .expect("pg_wal")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.len() == 24))
            .collect();
        segs.sort();
        for (i, seg) in segs.iter().take(3).enumerate() {
            let data = std::fs::read(seg).expect("read segment");
            put("wal_segment", &format!("segment{i}-8k"), &data[..8192]);
            if i == 0 {
                put("wal_segment", "segment0-40k", &data[..40960]);
            }
        }
        put(
            "wal_segment",
            "history",
            b"1\t0/3000158\tno recovery target specified\n",
        );
        put("wal_segment", "setting", b"16MB");

        // pack_header and index: packs built by hs-chunk (headers left unsealed), in
        // version 3 (what writers write) and version 1 (32-byte ids, still read).
        let ids: Vec<ChunkId> = (0u8..5)
            .map(|i| ChunkId::compute(&[i; 32], &[i; 100]))
            .collect();
        for (format, suffix, index_version, width) in [
            (PackFormat::V3, "", 2u8, IdWidth::Short),
            (PackFormat::V1, "-v1", 1, IdWidth::Long),
        ] {
            let mut b = PackBuilder::with_format(4096, format, Some([0x42; 32]));
            b.add_frame(&[1u8; 300], true, &[(ids[0], 8192), (ids[1], 8192)])
                .expect("frame");
            b.add_frame(&[2u8; 120], false, &[(ids[2], 120)])
                .expect("frame");
            b.add_frame(&[3u8; 200], true, &[(ids[3], 4000), (ids[4], 5)])
                .expect("frame");
            let (pack, header) = b.finish(|h| h.to_vec()).expect("finish");
            put("pack_header", &format!("pack{suffix}"), &pack);
            put("pack_header", &format!("header{suffix}"), &header.encode());
            let mut index = vec![index_version];
            index.extend_from_slice(&2u32.to_le_bytes());
            for p in 0u8..2 {
                index.extend_from_slice(&[p; 32]);
                hs_chunk::encode_entries(&header.entries, width, &mut index);
            }
            put("index", &format!("two-packs{suffix}"), &index);
        }
        put("index", "empty", &[1, 0, 0, 0, 0]);

        // manifest: a real backup's manifest, cut down to a few files.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let mut m = rt.block_on(async {
            let keyring = hs_crypt::Keyring::load(&s.keyring()).expect("keyring");
            let repo = hs_repo::Repository::open(&url, &keyring)
                .await
                .expect("open");
            repo.list_backups("demo").await.expect("list").remove(0)
        });
        for a in &mut m.archives {
            a.files.truncate(6);
        }
        m.pg_backup_manifest.truncate(400);
        let json = serde_json::to_vec(&m).expect("json");
        put("manifest", "backup.json", &json);
        put("manifest", "backup.json.zst", &hs_chunk::compress(&json, 3));
        let refs: Vec<hs_repo::ChunkRef> = ids
            .iter()
            .map(|&id| hs_repo::ChunkRef::unplaced(id, 8192))
            .collect();
        put("manifest", "chunk-list", &hs_repo::encode_chunk_list(&refs));
        assert!(Path::new(&corpus_dir()).join("manifest").is_dir());
    }
}
