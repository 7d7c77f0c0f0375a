//! Tidy checks over the workspace's source (as rust-analyzer's `tidy` tests): only `store/` has SQL.

use std::path::{Path, PathBuf};

/// Files outside `store/` that may hold SQL, each with the reason. Keep this short.
const SQL_ALLOWED: &[(&str, &str)] = &[
    (
        "src/bench.rs",
        "`keel bench` measures Keel against plain PostgreSQL doing the same work: the baseline's \
     statements (on bench_plain, bench_usage, bench_rm, and its reads of `events`) are the \
     measurement, and the bench's own database (create, drop, synchronous_commit, server \
     version) is no part of Keel; Keel's side goes through store like everything else",
    ),
    (
        "src/chaos/check.rs",
        "`keel chaos` judges Keel from outside: its checks read the log, the counters, the read \
         tables and the dead letters as the database owner with their own statements, so the \
         verdict does not rest on the store code it judges; it also holds the one fault that is \
         a statement (pg_terminate_backend on Keel's backends)",
    ),
];

/// Folders never scanned: the store (SQL lives there), the tests (fixtures may use SQL), builds.
const SKIPPED_DIRS: &[&str] = &["store", "tests", "target"];

/// Text that marks a SQL statement (or the means to send one) in Rust source.
const SQL_MARKS: &[&str] = &[
    "sqlx::query",
    "sqlx::raw_sql",
    "sqlx::AssertSqlSafe",
    "sqlx::Executor",
    "query_as(",
    "query_as::<",
    "query_as!(",
    "query_scalar(",
    "query_scalar::<",
    "query_scalar!(",
    "query!(",
    "raw_sql(",
    ".execute(\"",
];

/// Names that, imported from sqlx, send SQL.
const SQL_IMPORTS: &[&str] =
    &["query", "query_as", "query_scalar", "query_with", "raw_sql", "Executor", "AssertSqlSafe"];

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("readable directory").map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let top = path.parent() == Some(root);
            if name.starts_with('.') || (top && SKIPPED_DIRS.contains(&name.as_str())) || name == "target" {
                continue;
            }
            rust_files(&path, root, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every `file:line: text` of `source` that holds SQL; comments are skipped.
fn sql_lines(file: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let lines: Vec<&str> = source.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let code = line.trim_start();
        if code.starts_with("//") {
            i += 1;
            continue;
        }
        let mut hit = SQL_MARKS.iter().any(|m| code.contains(m));
        if code.starts_with("use sqlx") || code.starts_with("pub use sqlx") {
            // The whole `use` item, which may span lines.
            let mut item = String::new();
            let mut j = i;
            while j < lines.len() {
                item.push_str(lines[j]);
                if lines[j].contains(';') {
                    break;
                }
                j += 1;
            }
            hit |= item.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|w| SQL_IMPORTS.contains(&w));
        }
        if hit {
            found.push(format!("{file}:{}: {}", i + 1, code));
        }
        i += 1;
    }
    found
}

#[test]
fn sql_only_in_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, root, &mut files);
    let mut offences = Vec::new();
    let mut allowed_used = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let found = sql_lines(&rel, &std::fs::read_to_string(path).unwrap());
        if SQL_ALLOWED.iter().any(|(f, _)| *f == rel) {
            if !found.is_empty() {
                allowed_used.push(rel);
            }
            continue;
        }
        offences.extend(found);
    }
    assert!(files.len() > 20, "the walk found too few files ({}): is the root right?", files.len());
    assert!(
        offences.is_empty(),
        "SQL outside store/ (move it into a store function, or add the file to SQL_ALLOWED with a reason):\n{}",
        offences.join("\n")
    );
    for (file, _) in SQL_ALLOWED {
        assert!(
            allowed_used.iter().any(|f| f == file),
            "{file} is allowed SQL but has none: remove it from SQL_ALLOWED"
        );
    }
}

#[test]
fn the_sql_check_sees_each_form() {
    for line in [
        "let n = sqlx::query(\"SELECT 1\").execute(pool).await?;",
        "let n: i64 = sqlx::query_scalar(\"SELECT 1\").fetch_one(pool).await?;",
        "let r = sqlx::query_as::<_, (i64,)>(\"SELECT 1\");",
        "let r = sqlx::query!(\"SELECT 1\");",
        "sqlx::raw_sql(\"SELECT 1\").execute(pool).await?;",
        "conn.execute(\"SET LOCAL ROLE keel_keys\").await?;",
        "let r = query_scalar(\"SELECT 1\");",
    ] {
        assert_eq!(sql_lines("x.rs", line).len(), 1, "not seen: {line}");
    }
    assert_eq!(sql_lines("x.rs", "use sqlx::{\n    Connection,\n    Executor,\n};").len(), 1);
    assert!(sql_lines("x.rs", "use sqlx::{Connection, PgConnection};").is_empty());
    assert!(sql_lines("x.rs", "// sqlx::query is only in store").is_empty());
    assert!(sql_lines("x.rs", "let r = schema.execute(request).await;").is_empty());
}

/// Every `keel_*` series recorded anywhere in the workspace is described at start-up
/// (`src/telemetry.rs`), so `/metrics` has a `# HELP` for it even before it first shows.
#[test]
fn every_recorded_metric_is_described() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let described = std::fs::read_to_string(root.join("src/telemetry.rs")).unwrap();
    let mut files = Vec::new();
    for dir in ["gateway", "command", "query", "runner", "projections", "outbound", "store", "domain", "src"] {
        rust_files(&root.join(dir), root, &mut files);
    }
    let mut missing = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if !["counter!(", "gauge!(", "histogram!("].iter().any(|m| line.contains(m)) || line.contains("describe_") {
                continue;
            }
            let Some(start) = line.find("\"keel_") else { continue };
            let name = &line[start..];
            let name = &name[..name[1..].find('"').map_or(name.len(), |e| e + 2)];
            if !described.contains(name) {
                missing.push(format!("{}:{}: {name}", file.strip_prefix(root).unwrap().display(), i + 1));
            }
        }
    }
    assert!(missing.is_empty(), "recorded but never described in src/telemetry.rs: {missing:#?}");
}

/// Applied migrations are checksummed by sqlx (their whole text, comments included): editing one
/// breaks every database it was applied to, so their first lines keep the section numbers of the
/// former product specification, which `docs/decisions.md` maps to the documents that replaced it.
const CITATIONS_ALLOWED_UNDER: &[&str] = &["migrations/"];

/// The repository cites nothing a reader cannot open: the product specification it used to cite
/// by section lives outside it, and its content is carried into `docs/` (domain, api,
/// guarantees). Fails on a citation of it in any tracked text file.
#[test]
fn no_citation_of_a_specification_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let needle = concat!("SPEC", " §");
    let files: Vec<PathBuf> = match std::process::Command::new("git").arg("ls-files").current_dir(root).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).lines().map(|l| root.join(l)).collect(),
        // Not a git checkout: every file but builds and local data.
        _ => {
            fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
                for e in std::fs::read_dir(dir).unwrap().flatten() {
                    let p = e.path();
                    let name = e.file_name().to_string_lossy().into_owned();
                    if p.is_dir() {
                        if !matches!(name.as_str(), "target" | ".git" | ".keel") {
                            walk(&p, out);
                        }
                    } else {
                        out.push(p);
                    }
                }
            }
            let mut out = Vec::new();
            walk(root, &mut out);
            out
        }
    };
    assert!(files.len() > 50, "the repository's files are listed ({} found)", files.len());
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if CITATIONS_ALLOWED_UNDER.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (i, line) in text.lines().enumerate() {
            if line.contains(needle) {
                found.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "cite the documents in docs/ instead: {found:#?}");
}
