//! The internal `__generate-docs DIR` (run by `cargo xtask dist`): man pages for every
//! visible command and completions for bash, zsh and fish, none of which offer the
//! internal command itself; wrong arguments are a usage error.

use crate::support::{bin, Scratch};

#[test]
fn generated_docs_cover_the_commands_and_never_offer_the_internal_one() {
    let s = Scratch::new();
    let dir = s.path("generated");
    let out = bin().arg("__generate-docs").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in [
        "pg_hardstorage.1",
        "pg_hardstorage-wal-stream.1",
        "pg_hardstorage-restore.1",
        "pg_hardstorage-repo-verify.1",
    ] {
        assert!(dir.join("man").join(page).is_file(), "no man page {page}");
    }
    let mut completions = 0;
    for e in std::fs::read_dir(dir.join("completions")).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("restore") && text.contains("stream"),
            "{path:?}"
        );
        assert!(
            !text.contains("generate-docs"),
            "{path:?} offers __generate-docs"
        );
        completions += 1;
    }
    assert_eq!(completions, 3);
    for man in std::fs::read_dir(dir.join("man")).unwrap() {
        let text = std::fs::read_to_string(man.unwrap().path()).unwrap();
        assert!(!text.contains("generate\\-docs") && !text.contains("generate-docs"));
    }

    // Without DIR, or with two: a usage error (exit 2), not a panic.
    let none = bin().arg("__generate-docs").output().unwrap();
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    let two = bin().args(["__generate-docs", "a", "b"]).output().unwrap();
    assert_eq!(two.status.code(), Some(2), "{two:?}");
    // And `--help` does not list it.
    let help = bin().arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate"));
}
