//! The source layout's rule (issue 13): no module in `server/src` (nor in
//! the MongoDB crate's `server/mongo/src`) over 500 lines, unit tests kept apart (`*_tests.rs`, `tests.rs`), so each file
//! stays one responsibility a reader can hold.

use std::path::Path;

const MAX_LINES: usize = 500;

/// Checks every module under `dir`; returns how many it read.
fn visit(dir: &Path, long: &mut Vec<String>) -> usize {
    let mut read = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read += visit(&path, long);
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if !name.ends_with(".rs") || name.ends_with("_tests.rs") || name == "tests.rs" {
            continue;
        }
        read += 1;
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", path.display()));
        }
    }
    read
}

#[test]
fn no_module_in_server_src_is_over_500_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    let read = visit(&root.join("src"), &mut long);
    assert!(read > 50, "the walk read only {read} modules");
    let read = visit(&root.join("mongo/src"), &mut long);
    assert!(read >= 3, "the walk read only {read} modules of server/mongo/src");
    assert!(long.is_empty(), "split these modules (at most {MAX_LINES} lines each):\n{}", long.join("\n"));
}
