//! `restore --preview` shows the bytes the restore needs and the space free at the
//! target; a target whose file system is too small is refused before anything is
//! written, by the preview and by the restore (`preflight.target_space_insufficient`,
//! exit 4). The small file system is a real 4 MiB tmpfs.

use std::path::{Path, PathBuf};

use crate::support::{bin, init_and_backup, restore, Scratch};

/// A mounted tmpfs of `size`; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn preview_shows_space_and_a_restore_that_cannot_fit_is_refused_early() {
    let pg = crate::support::cluster_with(
        "CREATE TABLE t AS SELECT g, md5(g::text) AS m FROM generate_series(1, 50000) g",
    );
    let s = Scratch::new();
    let (url, _, _) = init_and_backup(&s, &pg, "demo");

    let target = s.path("restored");
    let preview = restore(&s, "demo", "latest", &target, &url, &["--preview"]).ok();
    let space = &preview["space"][0];
    let needed = space["needed_bytes"].as_u64().unwrap();
    assert!(needed > 8 << 20, "{preview}");
    assert!(space["free_bytes"].as_u64().unwrap() > needed, "{preview}");
    assert_eq!(space["fits"], true);
    assert_eq!(space["locations"][0], target.to_str().unwrap());
    assert!(!target.exists(), "the preview wrote {target:?}");
    let out = bin()
        .args([
            "restore",
            "demo",
            "latest",
            "--preview",
            "--repo",
            &url,
            "--target",
        ])
        .arg(&target)
        .arg("--keyring")
        .arg(s.keyring())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("Space:   ")
            && l.contains(" needed at ")
            && l.ends_with(" free")),
        "{text}"
    );

    let Some(small) = Tmpfs::mount(&s.path("small"), "4m") else {
        eprintln!("cannot mount a tmpfs (not root?): the refusal is covered by hs-ops' unit tests");
        return;
    };
    let target = small.0.join("data");
    for extra in [&["--preview"][..], &[][..]] {
        let r = restore(&s, "demo", "latest", &target, &url, extra);
        assert_eq!(r.status, 4, "{extra:?}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(r.err_code(), "preflight.target_space_insufficient");
        let message = r.json()["error"]["message"].to_string();
        assert!(
            message.contains("free") && message.contains("needs"),
            "{message}"
        );
        assert!(!target.exists(), "{extra:?}: wrote {target:?}");
    }
}
