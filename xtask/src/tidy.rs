//! The tidy test: house rules checked as a `#[test]` so that `cargo test` enforces them.
//!
//! - every `.rs` file under `crates/`, `xtask/` and `tests/` starts with a `//!` line;
//! - no `dbg!(` anywhere;
//! - no todo or unimplemented macro calls outside test code (files under `tests/`, `benches/`,
//!   `fuzz/`, or after a `#[cfg(test)]` line in a file);
//! - every dotted error code in library and CLI code is listed in docs/exit-codes.md;
//! - every CLI command is documented in README.md or docs/;
//! - no function of library, CLI or xtask code is over 120 lines without a `// Long
//!   because:` reason written above it;
//! - the crate rules of `crate_rules`: layer order, opendal only in hs-repo, no anyhow in
//!   library crates, no unused dependency, every crate in docs/ARCHITECTURE.md.

/// Rules about the crates themselves, read from their Cargo.toml files and sources:
///
/// - the layer order (`LAYERS`): no crate's `[dependencies]` names a crate
///   of its own layer or above;
/// - only hs-repo uses opendal;
/// - no anyhow in library crates (only hs-cli, xtask and tests may use it);
/// - every `[dependencies]` entry is used in the crate's `src/`;
/// - docs/ARCHITECTURE.md has a `### <crate>` section for every crate in `crates/`.
#[cfg(test)]
mod crate_rules {
    use crate::util::workspace_root;
    use std::path::{Path, PathBuf};

    /// The crates of `crates/` and xtask, bottom layer first. A crate's normal and build
    /// dependencies may only name crates of a lower row; dev-dependencies may go anywhere
    /// Cargo accepts (hs-repo's tests use hs-testkit, which uses hs-repo). A new crate goes
    /// into the row it belongs to, or into a new row between two others.
    pub(super) const LAYERS: &[&[&str]] = &[
        // The coded error type every library crate shares.
        &["hs-base"],
        // PostgreSQL values: LSNs, timelines, WAL segment names, deployment names.
        &["hs-pg"],
        // Leaves: the replication protocol, chunking and packs, keys and sealing.
        &["hs-proto", "hs-chunk", "hs-crypt"],
        // The repository and its storage backends.
        &["hs-repo"],
        // Backup and WAL streaming, restore planning, test support over hs-repo.
        &["hs-backup", "hs-pitr", "hs-testkit"],
        // Services shared by the CLI and the API.
        &["hs-ops"],
        // The REST API.
        &["hs-api"],
        // The binary.
        &["hs-cli"],
        // Project automation (uses hs-testkit's suites).
        &["xtask"],
    ];

    /// Crates that may use anyhow (besides tests): the binary and xtask.
    const ANYHOW_ALLOWED: &[&str] = &["hs-cli", "xtask"];

    /// The one crate that may use opendal.
    const OPENDAL_OWNER: &str = "hs-repo";

    /// One crate of `crates/`: its name, Cargo.toml and every `.rs` file under its directory
    /// (paths relative to it, e.g. `src/lib.rs`, `tests/it/main.rs`).
    pub(super) struct Crate {
        pub name: String,
        pub toml: String,
        pub files: Vec<(PathBuf, String)>,
    }

    impl Crate {
        /// The text of the files under `src/` (and `build.rs`), which is what `[dependencies]`
        /// serve.
        fn lib_files(&self) -> impl Iterator<Item = &(PathBuf, String)> {
            self.files
                .iter()
                .filter(|(p, _)| p.starts_with("src") || p == Path::new("build.rs"))
        }
    }

    fn collect_rs(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                collect_rs(&path, base, out);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
                out.push((rel, text));
            }
        }
    }

    /// Every crate of `crates/` (a directory with a Cargo.toml) and xtask, sorted by name.
    pub(super) fn workspace_crates() -> Vec<Crate> {
        let mut crates = Vec::new();
        let dir = workspace_root().join("crates");
        let members = std::fs::read_dir(&dir)
            .expect("crates/")
            .flatten()
            .map(|e| e.path());
        for path in members.chain([workspace_root().join("xtask")]) {
            let Ok(toml) = std::fs::read_to_string(path.join("Cargo.toml")) else {
                continue;
            };
            let name = package_name(&toml).unwrap_or_else(|| path.display().to_string());
            let mut files = Vec::new();
            collect_rs(&path, &path, &mut files);
            crates.push(Crate { name, toml, files });
        }
        crates.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(
            crates.len() >= 5,
            "found only {} crates in crates/",
            crates.len()
        );
        crates
    }

    /// `name` of the `[package]` table.
    pub(super) fn package_name(toml: &str) -> Option<String> {
        let mut in_package = false;
        for line in toml.lines().map(str::trim) {
            if line.starts_with('[') {
                in_package = line == "[package]";
            } else if in_package {
                if let Some((key, value)) = line.split_once('=') {
                    if key.trim() == "name" {
                        return Some(value.trim().trim_matches('"').to_owned());
                    }
                }
            }
        }
        None
    }

    /// The names declared in the `kind` tables of a Cargo.toml (`kind` is `dependencies`,
    /// `dev-dependencies` or `build-dependencies`), `[target.'cfg(..)'.<kind>]` and
    /// `[<kind>.<name>]` tables included.
    pub(super) fn deps(toml: &str, kind: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in toml.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(header) = line.strip_prefix('[') {
                let header = header.trim_end_matches(']').trim();
                inside = header == kind
                    || (header.starts_with("target.") && header.ends_with(&format!(".{kind}")));
                if let Some(name) = header.strip_prefix(&format!("{kind}.")) {
                    out.push(name.trim_matches('"').to_owned());
                }
                continue;
            }
            if !inside {
                continue;
            }
            if let Some((key, _)) = line.split_once('=') {
                let name = key.split('.').next().unwrap_or("").trim().trim_matches('"');
                if !name.is_empty() {
                    out.push(name.to_owned());
                }
            }
        }
        out
    }

    /// Normal and build dependencies: what the library (or binary) itself links.
    fn linked_deps(toml: &str) -> Vec<String> {
        let mut d = deps(toml, "dependencies");
        d.extend(deps(toml, "build-dependencies"));
        d
    }

    fn is_ident_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// Whether `text` uses the crate `ident`: `ident::` as a whole word anywhere, or a
    /// `use ident` / `extern crate ident` item.
    pub(super) fn mentions(text: &str, ident: &str) -> bool {
        let path = format!("{ident}::");
        let in_path = text
            .match_indices(&path)
            .any(|(i, _)| !text[..i].chars().next_back().is_some_and(is_ident_char));
        in_path
            || text.lines().any(|line| {
                let item = line.trim_start();
                let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
                let item = item.strip_prefix("pub ").unwrap_or(item);
                ["use ", "extern crate "].iter().any(|kw| {
                    item.strip_prefix(kw)
                        .and_then(|rest| rest.strip_prefix(ident))
                        .is_some_and(|rest| !rest.starts_with(is_ident_char))
                })
            })
    }

    fn layer_of(name: &str) -> Option<usize> {
        LAYERS.iter().position(|row| row.contains(&name))
    }

    /// The crate-order rule for one crate.
    pub(super) fn layer_problems(c: &Crate) -> Vec<String> {
        let Some(own) = layer_of(&c.name) else {
            return vec![format!(
                "crate {} is not in the LAYERS table of xtask/src/tidy.rs: add it to the row of \
                 the layer it belongs to (or a new row), below every crate that depends on it",
                c.name
            )];
        };
        let mut problems = Vec::new();
        for dep in linked_deps(&c.toml) {
            match layer_of(&dep) {
                Some(l) if l >= own => problems.push(format!(
                    "{} (layer {own}) depends on {dep} (layer {l}): a crate may only depend on \
                     crates of a lower layer (LAYERS in xtask/src/tidy.rs)",
                    c.name
                )),
                _ => {}
            }
        }
        problems
    }

    /// Only hs-repo names opendal, in its Cargo.toml or its code.
    pub(super) fn opendal_problems(c: &Crate) -> Vec<String> {
        if c.name == OPENDAL_OWNER {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
            for dep in deps(&c.toml, kind) {
                if dep.starts_with("opendal") {
                    problems.push(format!(
                        "{}: Cargo.toml [{kind}] names {dep}: only {OPENDAL_OWNER} may use opendal",
                        c.name
                    ));
                }
            }
        }
        for (path, text) in &c.files {
            if mentions(text, "opendal") {
                problems.push(format!(
                    "{}/{}: uses opendal: only {OPENDAL_OWNER} may (go through its Backend trait)",
                    c.name,
                    path.display()
                ));
            }
        }
        problems
    }

    /// No anyhow in library crates: not in `[dependencies]`, not in `src/`.
    pub(super) fn anyhow_problems(c: &Crate) -> Vec<String> {
        if ANYHOW_ALLOWED.contains(&c.name.as_str()) {
            return Vec::new();
        }
        let mut problems = Vec::new();
        if linked_deps(&c.toml).iter().any(|d| d == "anyhow") {
            problems.push(format!(
                "{}: Cargo.toml [dependencies] names anyhow: library crates return their coded \
                 error type (anyhow is for {ANYHOW_ALLOWED:?}, xtask and tests)",
                c.name
            ));
        }
        for (path, text) in c.lib_files() {
            if mentions(text, "anyhow") {
                problems.push(format!(
                    "{}/{}: uses anyhow in library code",
                    c.name,
                    path.display()
                ));
            }
        }
        problems
    }

    /// Every `[dependencies]` entry is used by the code under `src/`.
    pub(super) fn unused_dep_problems(c: &Crate) -> Vec<String> {
        let code: String = c.lib_files().map(|(_, t)| t.as_str()).collect();
        linked_deps(&c.toml)
            .into_iter()
            .filter(|dep| !mentions(&code, &dep.replace('-', "_")))
            .map(|dep| {
                format!(
                    "{}: Cargo.toml declares {dep}, which nothing under src/ uses: remove it \
                     (or move it to [dev-dependencies] if only tests use it)",
                    c.name
                )
            })
            .collect()
    }

    /// docs/ARCHITECTURE.md has a `### <crate>` heading for every crate.
    pub(super) fn architecture_problems(names: &[&str], doc: &str) -> Vec<String> {
        names
            .iter()
            .filter(|name| {
                !doc.lines().any(|l| {
                    l.strip_prefix("### ")
                        .and_then(|h| h.strip_prefix(**name))
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
                })
            })
            .map(|name| format!("docs/ARCHITECTURE.md: the code map has no `### {name}` section"))
            .collect()
    }

    /// A per-crate rule: the problems it finds in one crate.
    type Rule = fn(&Crate) -> Vec<String>;

    /// The per-crate rules, by name.
    const RULES: &[(&str, Rule)] = &[
        ("crate order", layer_problems),
        ("opendal only in hs-repo", opendal_problems),
        ("no anyhow in library crates", anyhow_problems),
        ("no unused dependencies", unused_dep_problems),
    ];

    #[test]
    fn tidy_crate_rules() {
        let crates = workspace_crates();
        let mut failed = Vec::new();
        for (rule, check) in RULES {
            let problems: Vec<String> = crates.iter().flat_map(check).collect();
            if !problems.is_empty() {
                failed.push(format!("{rule}:\n  {}", problems.join("\n  ")));
            }
        }
        assert!(
            failed.is_empty(),
            "tidy crate rules:\n{}",
            failed.join("\n")
        );
    }

    #[test]
    fn tidy_architecture_documents_every_crate() {
        let crates = workspace_crates();
        let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
        let doc = std::fs::read_to_string(workspace_root().join("docs/ARCHITECTURE.md"))
            .expect("docs/ARCHITECTURE.md");
        let problems = architecture_problems(&names, &doc);
        assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
    }

    fn fixture(name: &str, toml: &str, files: &[(&str, &str)]) -> Crate {
        Crate {
            name: name.to_owned(),
            toml: toml.to_owned(),
            files: files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn tidy_crate_rules_catch_what_they_should() {
        let toml = "[package]\nname = \"hs-chunk\"\n\n[dependencies]\nhs-repo.workspace = true\n\
                    serde = { workspace = true }\n\n[dev-dependencies]\nhs-testkit.workspace = true\n\
                    \n[target.'cfg(unix)'.dependencies]\nlibc = \"0.2\"\n";
        assert_eq!(package_name(toml).as_deref(), Some("hs-chunk"));
        assert_eq!(deps(toml, "dependencies"), ["hs-repo", "serde", "libc"]);
        assert_eq!(deps(toml, "dev-dependencies"), ["hs-testkit"]);
        assert_eq!(
            deps("[dependencies.foo]\nversion = \"1\"\n", "dependencies"),
            ["foo"]
        );

        // Crate order: a dependency upwards fails, a dev-dependency upwards does not.
        let up = fixture("hs-chunk", toml, &[]);
        assert_eq!(layer_problems(&up).len(), 1, "{:?}", layer_problems(&up));
        let down = fixture(
            "hs-repo",
            "[dependencies]\nhs-chunk.workspace = true\n",
            &[],
        );
        assert!(layer_problems(&down).is_empty());
        let sideways = fixture(
            "hs-chunk",
            "[dependencies]\nhs-crypt.workspace = true\n",
            &[],
        );
        assert_eq!(layer_problems(&sideways).len(), 1);
        let unknown = fixture("hs-new", "[dependencies]\n", &[]);
        let p = layer_problems(&unknown);
        assert!(
            p.len() == 1 && p[0].contains("not in the LAYERS table"),
            "{p:?}"
        );

        // opendal: only hs-repo.
        let dal = fixture(
            "hs-pitr",
            "[dev-dependencies]\nopendal.workspace = true\n",
            // Split so that this file does not trip the rule itself.
            &[("tests/it/s3.rs", concat!("use open", "dal::Operator;"))],
        );
        assert_eq!(opendal_problems(&dal).len(), 2);
        let dal = fixture("hs-repo", "[dependencies]\nopendal.workspace = true\n", &[]);
        assert!(opendal_problems(&dal).is_empty());

        // anyhow: not in a library, fine in its tests and in hs-cli.
        let lib = fixture(
            "hs-crypt",
            "[dependencies]\nanyhow.workspace = true\n",
            &[("src/lib.rs", "fn f() -> anyhow::Result<()> { Ok(()) }")],
        );
        assert_eq!(anyhow_problems(&lib).len(), 2);
        let tests_only = fixture(
            "hs-crypt",
            "[dev-dependencies]\nanyhow.workspace = true\n",
            &[("tests/it/main.rs", "use anyhow::Result;")],
        );
        assert!(anyhow_problems(&tests_only).is_empty());
        let cli = fixture("hs-cli", "[dependencies]\nanyhow = \"1\"\n", &[]);
        assert!(anyhow_problems(&cli).is_empty());

        // Unused dependencies: `name::` or `use name` under src/, with - read as _.
        let c = fixture(
            "hs-pitr",
            "[dependencies]\nhs-repo.workspace = true\nthiserror.workspace = true\n\
             hex.workspace = true\nasync-trait.workspace = true\n",
            &[
                (
                    "src/lib.rs",
                    "use hs_repo::Repository;\nuse async_trait::async_trait;",
                ),
                (
                    "src/x.rs",
                    "fn f() { to_hex::x(); }\n// may use thiserror one day",
                ),
                (
                    "tests/it/main.rs",
                    "fn g() { thiserror::x(); hex::encode(b\"\"); }",
                ),
            ],
        );
        let p = unused_dep_problems(&c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("thiserror") && p[1].contains("hex"), "{p:?}");

        // ARCHITECTURE.md: a `### name` heading, possibly followed by a note.
        let doc = "## Code map\n### hs-cli (binary `pg_hardstorage`)\n### hs-repo\n#### hs-pg\n";
        assert!(architecture_problems(&["hs-cli", "hs-repo"], doc).is_empty());
        assert_eq!(architecture_problems(&["hs-pg", "hs-rep"], doc).len(), 2);
    }
}

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

    /// The longest a function may be without a written reason: a `// Long because: ...`
    /// line among the six lines above its `fn` line.
    const MAX_FN_LINES: usize = 120;
    const LONG_BECAUSE: &str = concat!("// Long", " because:");

    /// The name of the function a line declares, if it declares one.
    fn declared_fn(line: &str) -> Option<&str> {
        let mut rest = line.trim_start();
        loop {
            let before = rest;
            for prefix in [
                "pub(crate) ",
                "pub(super) ",
                "pub ",
                "const ",
                "async ",
                "unsafe ",
            ] {
                rest = rest.strip_prefix(prefix).unwrap_or(rest);
            }
            if rest == before {
                break;
            }
        }
        let rest = rest.strip_prefix("fn ")?;
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    }

    /// Functions of one file's non-test code longer than `MAX_FN_LINES` with no reason
    /// written above them. It reads rustfmt's layout: a body ends at the first `}` line at
    /// the indent of its `fn` line.
    fn long_functions(path: &Path, text: &str) -> Vec<String> {
        if is_test_path(path) {
            return Vec::new();
        }
        let lines: Vec<&str> = text.lines().collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        let mut problems = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let Some(name) = declared_fn(line) else {
                continue;
            };
            // The signature ends at the first line ending in `{` (a body) or `;` (none).
            let Some(open) = lines[i..]
                .iter()
                .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'))
            else {
                continue;
            };
            if lines[i + open].trim_end().ends_with(';') || line.trim_end().ends_with('}') {
                continue;
            }
            let at = indent(line);
            let Some(close) = lines[i + open + 1..]
                .iter()
                .position(|l| indent(l) == at && l.trim_start().starts_with('}'))
            else {
                continue;
            };
            let len = open + close + 2;
            let reason = lines[i.saturating_sub(6)..i]
                .iter()
                .any(|l| l.contains(LONG_BECAUSE));
            if len > MAX_FN_LINES && !reason {
                problems.push(format!(
                    "{}:{}: fn {name} is {len} lines (over {MAX_FN_LINES}): split it into named \
                     steps, or write `{LONG_BECAUSE} <reason>` just above it",
                    path.display(),
                    i + 1
                ));
            }
        }
        problems
    }

    #[test]
    fn tidy_functions_are_short_or_say_why() {
        let mut problems = Vec::new();
        for f in all_files() {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let rel = f.strip_prefix(workspace_root()).unwrap_or(&f);
            problems.extend(long_functions(rel, &text));
        }
        assert!(
            problems.is_empty(),
            "tidy: {} long function(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    #[test]
    fn tidy_long_function_check_catches_what_it_should() {
        let p = Path::new("crates/x/src/lib.rs");
        let body = |n: usize| "    let x = 1;\n".repeat(n);
        let long = format!(
            "//! x\npub async fn big(\n    a: u8,\n) -> u8 {{\n{}}}\n",
            body(130)
        );
        let found = long_functions(p, &long);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("fn big is 134 lines"), "{found:?}");
        let said = long.replace(
            "pub async fn",
            &format!("{LONG_BECAUSE} a script\npub async fn"),
        );
        assert!(long_functions(p, &said).is_empty());
        // Short functions, trait declarations and one-liners pass; test code is not read.
        let fine = format!(
            "//! x\ntrait T {{\n    fn d(&self) -> u8;\n}}\nfn one() {{ 1 }}\nfn f() {{\n{}}}\n",
            body(100)
        );
        assert!(long_functions(p, &fine).is_empty());
        assert!(long_functions(Path::new("crates/x/tests/it/a.rs"), &long).is_empty());
        let in_tests = format!("//! x\n#[cfg(test)]\nmod t {{\n{}}}\n", &long[6..]);
        assert!(long_functions(p, &in_tests).is_empty());
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

    const NAMESPACES: [&str; 14] = [
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
        "notify",
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
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
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

    /// Error codes compared as string literals in non-test code (`e.code() == "x.y"`,
    /// `p.code == "x.y"`, `matches!(e.code(), "x.y" | ..)`, `match e.code() { "x.y" => .. }`):
    /// they compile with a typo; compare with the `hs_base::code` constants instead.
    fn literal_code_comparisons(text: &str) -> Vec<String> {
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let lines: Vec<&str> = code.lines().collect();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let l = line.split("//").next().unwrap_or("");
            let compared = ["code() == \"", "code() != \"", "code == \"", "code != \""]
                .iter()
                .any(|p| l.contains(p))
                || (l.contains("matches!(") && l.contains("code(), \""));
            let matched = l.trim_end().ends_with(".code() {")
                && lines[i + 1..]
                    .iter()
                    .find(|n| !n.trim().is_empty())
                    .is_some_and(|n| n.trim_start().starts_with('"'));
            if compared || matched {
                out.push(line.trim().to_owned());
            }
        }
        out
    }

    #[test]
    fn tidy_error_codes_are_compared_as_constants() {
        let mut found = Vec::new();
        for path in all_files() {
            if is_test_path(&path) || !path.starts_with(workspace_root().join("crates")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for l in literal_code_comparisons(&text) {
                let rel = path.strip_prefix(workspace_root()).unwrap_or(&path);
                found.push(format!("{}: {l}", rel.display()));
            }
        }
        assert!(
            found.is_empty(),
            "error codes compared as strings (use the hs_base::code constants):\n{}",
            found.join("\n")
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
        assert_eq!(
            codes_in("\"usage.not_utf8\""),
            vec!["usage.not_utf8".to_owned()]
        );
        let text = "if e.code() == \"io.read_only\" {}\nif e.code() == code::IO_READ_ONLY {}\n\
                    let x = matches!(e.code(), \"a.b\" | \"c.d\") || p.code != \"a.b\";\nmatch e.code() {\n    \"a.b\" => 1,\n}\n\
                    #[cfg(test)]\nfn t() { assert!(e.code() == \"a.b\") }";
        assert_eq!(literal_code_comparisons(text).len(), 3);
    }
}
