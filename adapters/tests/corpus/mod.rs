//! The shared real-traffic corpus (`../shared/corpus` from the repository root, see its
//! `ORIGINS.md`), read in place: it holds AGPL data that must not be copied into this
//! repository. Where it is absent, the tests that need it say so and pass.

use std::path::PathBuf;

/// The corpus folder, when it is there.
pub fn root() -> Option<PathBuf> {
    let root = std::env::var_os("INTAKE_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")));
    if root.is_dir() {
        Some(root)
    } else {
        println!("SKIPPED: the shared corpus is absent ({}); set INTAKE_CORPUS_DIR to run this test", root.display());
        None
    }
}

/// The bytes of one corpus file (`email/zammad/mail046.box`), or `None` (printed) without
/// the corpus.
#[allow(dead_code)]
pub fn read(relative: &str) -> Option<Vec<u8>> {
    let path = root()?.join(relative);
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Every file of one corpus folder whose name ends in `suffix`, sorted, with its bytes.
#[allow(dead_code)]
pub fn files(folder: &str, suffix: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let dir = root()?.join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    Some(names.into_iter().map(|name| (name.clone(), std::fs::read(dir.join(&name)).expect("corpus file"))).collect())
}
