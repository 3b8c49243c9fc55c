//! The OpenAPI document is committed as `contracts/openapi.json`, so that
//! CI can compare the HTTP contract of this commit with a base commit's
//! (`.ci/contracts.sh`) without building the base, and so that a change to
//! the contract shows in review as a diff of that file.
//!
//! This test holds the file equal to `experience_apis::openapi::json()`,
//! which `/openapi.json` serves: pretty-printed, keys sorted at every level,
//! one newline at the end. After a deliberate change to the document, bless
//! the file and commit it with the change:
//!
//! ```sh
//! ERP_CONNECT_BLESS=1 cargo test --test contract_snapshot
//! ```

use std::path::PathBuf;

use serde_json::Value;

const BLESS: &str = "ERP_CONNECT_BLESS";

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contracts").join("openapi.json")
}

/// Keys sorted at every level whatever map serde_json was built with (its
/// `preserve_order` feature keeps insertion order, and any crate in the
/// build may turn it on), so the file only changes when the contract does.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn rendered() -> String {
    let doc: Value = serde_json::from_str(&experience_apis::openapi::json()).expect("the document is JSON");
    let mut text = serde_json::to_string_pretty(&sorted(doc)).expect("a JSON value renders");
    text.push('\n');
    text
}

/// Where two renderings first part, with a few lines of each around it.
fn first_difference(committed: &str, current: &str) -> String {
    let old: Vec<&str> = committed.lines().collect();
    let new: Vec<&str> = current.lines().collect();
    let at = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let window = |lines: &[&str]| {
        lines[at.saturating_sub(3)..(at + 4).min(lines.len())]
            .iter()
            .map(|line| format!("    {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "first difference at line {} ({} lines committed, {} now)\n  committed:\n{}\n  now:\n{}",
        at + 1,
        old.len(),
        new.len(),
        window(&old),
        window(&new)
    )
}

#[test]
fn the_committed_openapi_snapshot_is_the_served_document() {
    let path = snapshot_path();
    let current = rendered();
    if std::env::var(BLESS).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("contracts/")).expect("create contracts/");
        std::fs::write(&path, &current).expect("write the snapshot");
        eprintln!("blessed {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "{} is not the document /openapi.json serves.\n{}\n\n\
         If the change to the contract is deliberate, bless the snapshot and commit it with the change:\n\
         \n    {BLESS}=1 cargo test --test contract_snapshot\n\n\
         CI then checks it against the base (.ci/contracts.sh): v1 may only grow; \
         a breaking change goes into a new major version beside v1 (README, \"Versioning and contracts\").",
        path.display(),
        first_difference(&committed, &current)
    );
}
