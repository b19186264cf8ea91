//! Every file of the fuzz corpora (server/fuzz/corpus/<target>/: the seeds
//! and every crash input found so far, `crash-*`) through the same checks
//! the cargo-fuzz targets run (server/fuzz/harness.rs), so a crash once
//! found stays fixed without cargo-fuzz or a nightly toolchain.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

/// A target's check.
type Check = fn(&[u8]);

#[test]
fn every_corpus_file_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let targets: [(&str, Check); 4] = [
        ("http_head", harness::http_head),
        ("ws_decoder", harness::ws_decoder),
        ("chat_input", harness::chat_input),
        ("replica_input", harness::replica_input),
    ];
    let mut seen = Vec::new();
    for dir in std::fs::read_dir(&corpus).unwrap() {
        let name = dir.unwrap().file_name().into_string().unwrap();
        assert!(targets.iter().any(|(t, _)| *t == name), "corpus/{name} has no target here: add it to this test");
    }
    for (target, check) in targets {
        let dir = corpus.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} fails its target {target}", file.display());
            seen.push(file);
        }
    }
    assert!(seen.iter().any(|f| f.file_name().unwrap().to_string_lossy().starts_with("crash-")));
}
