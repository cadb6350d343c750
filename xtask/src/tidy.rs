//! The tidy test: house rules checked as a `#[test]` so that `cargo test` enforces them.
//!
//! - every `.rs` file under `crates/`, `xtask/` and `tests/` starts with a `//!` line;
//! - no `dbg!(` anywhere;
//! - no todo or unimplemented macro calls outside test code (files under `tests/`, `benches/`,
//!   `fuzz/`, or after a `#[cfg(test)]` line in a file);
//! - every dotted error code in library and CLI code is listed in docs/exit-codes.md;
//! - every CLI command is documented in README.md or docs/.

#[cfg(test)]
mod tests {
    use crate::util::workspace_root;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" || name.starts_with("target-") {
                continue;
            }
            if path.is_dir() {
                rust_files(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    fn all_files() -> Vec<PathBuf> {
        let root = workspace_root();
        let mut files = Vec::new();
        for dir in ["crates", "xtask", "tests"] {
            rust_files(&root.join(dir), &mut files);
        }
        files.sort();
        files
    }

    fn is_test_path(path: &Path) -> bool {
        path.components().any(|c| {
            matches!(
                c.as_os_str().to_str(),
                Some("tests") | Some("benches") | Some("fuzz")
            )
        })
    }

    // Built with concat! so that this file does not trip its own checks.
    const DBG: &str = concat!("dbg", "!(");
    const TODO: &str = concat!("todo", "!(");
    const UNIMPLEMENTED: &str = concat!("unimplemented", "!(");

    /// Problems found in one file's text (`path` only decides what counts as test code).
    fn check(path: &Path, text: &str) -> Vec<String> {
        let shown = path.display();
        let mut problems = Vec::new();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!(
                "{shown}: must start with a `//!` doc line saying what it is"
            ));
        }
        let test_file = is_test_path(path);
        let mut in_test_code = test_file;
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if line.trim_start().starts_with("#[cfg(test)]") {
                in_test_code = true;
            }
            if code.contains(DBG) {
                problems.push(format!("{shown}:{}: remove the dbg! call", i + 1));
            }
            if !in_test_code && (code.contains(TODO) || code.contains(UNIMPLEMENTED)) {
                problems.push(format!(
                    "{shown}:{}: todo!/unimplemented! outside tests: return an error instead",
                    i + 1
                ));
            }
        }
        problems
    }

    #[test]
    fn tidy_house_rules() {
        let files = all_files();
        assert!(
            files.len() > 5,
            "tidy found only {} .rs files: wrong root?",
            files.len()
        );
        let mut problems = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let rel = f.strip_prefix(workspace_root()).unwrap_or(f);
            problems.extend(check(rel, &text));
        }
        assert!(
            problems.is_empty(),
            "tidy: {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    #[test]
    fn tidy_catches_what_it_should() {
        let p = Path::new("crates/x/src/lib.rs");
        assert_eq!(check(p, "//! ok\nfn f() {}\n").len(), 0);
        assert_eq!(check(p, "fn f() {}\n").len(), 1);
        let body = format!("//! x\nfn f() {{ {TODO}) }}\n");
        assert_eq!(check(p, &body).len(), 1);
        let body = format!("//! x\n#[cfg(test)]\nmod t {{ fn f() {{ {TODO}) }} }}\n");
        assert_eq!(check(p, &body).len(), 0);
        let body = format!("//! x\nfn f() {{ {DBG}1); }}\n");
        assert_eq!(check(p, &body).len(), 1);
        let t = Path::new("crates/x/tests/it/main.rs");
        let body = format!("//! x\nfn f() {{ {UNIMPLEMENTED}) }}\n");
        assert_eq!(check(t, &body).len(), 0);
    }

    const NAMESPACES: [&str; 13] = [
        "usage",
        "auth",
        "preflight",
        "aborted",
        "notfound",
        "conflict",
        "unreachable",
        "verify",
        "doctor",
        "io",
        "protocol",
        "server",
        "internal",
    ];

    /// Dotted error codes written as string literals in non-test code.
    fn codes_in(text: &str) -> Vec<String> {
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut out = Vec::new();
        for lit in code.split('"').skip(1).step_by(2) {
            let Some((ns, rest)) = lit.split_once('.') else {
                continue;
            };
            let ok = NAMESPACES.contains(&ns)
                && !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
            if ok {
                out.push(lit.to_owned());
            }
        }
        out
    }

    #[test]
    fn tidy_every_error_code_is_documented() {
        let doc = std::fs::read_to_string(workspace_root().join("docs/exit-codes.md"))
            .expect("docs/exit-codes.md");
        let mut missing = Vec::new();
        for path in all_files() {
            // hs-testkit is test support: its strings name files (server.crt), not errors.
            if is_test_path(&path)
                || !path.starts_with(workspace_root().join("crates"))
                || path.starts_with(workspace_root().join("crates/hs-testkit"))
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for c in codes_in(&text) {
                if !doc.contains(&format!("`{c}`")) && !missing.contains(&c) {
                    missing.push(c);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "error codes missing from docs/exit-codes.md: {missing:?}"
        );
    }

    #[test]
    fn tidy_every_cli_command_is_documented() {
        let root = workspace_root();
        let cli = std::fs::read_to_string(root.join("crates/hs-cli/src/cli.rs")).expect("cli.rs");
        let mut docs = std::fs::read_to_string(root.join("README.md")).unwrap_or_default();
        for e in std::fs::read_dir(root.join("docs"))
            .expect("docs/")
            .flatten()
        {
            docs.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        // Command names are the quoted strings of `Command::name`.
        let names: Vec<&str> = cli
            .lines()
            .filter(|l| l.contains("=> \""))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(names.len() >= 5, "found no command names in cli.rs");
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !docs.contains(&format!("pg_hardstorage {n}")))
            .collect();
        assert!(missing.is_empty(), "CLI commands without docs: {missing:?}");
    }

    #[test]
    fn tidy_code_scan_finds_codes() {
        let text = "let e = Error::new(\"conflict.repo_exists\", \"a.b\"); \"Hello. World\"";
        assert_eq!(codes_in(text), vec!["conflict.repo_exists".to_owned()]);
    }
}
