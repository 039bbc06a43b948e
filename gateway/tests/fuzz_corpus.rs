//! The fuzz harnesses on stable: every committed seed and every input a fuzzer once
//! crashed on (`gateway/fuzz/regressions/<target>/`, kept as tests when fixed) runs
//! through its harness, and so do a few thousand generated inputs per target. The
//! coverage-guided runs themselves are `cargo fuzz` (`gateway/fuzz/`, see `.ci/run`).

use std::path::Path;

use proptest::prelude::*;
use tailgate::fuzz::TARGETS;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let data = std::fs::read(e.path()).expect("read a corpus file");
            (e.path().display().to_string(), data)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_kept_crash_passes_its_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, harness) in TARGETS {
        let seeds = inputs(&root.join("corpus").join(name));
        assert!(!seeds.is_empty(), "{name} has a committed seed corpus");
        assert!(
            root.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .exists(),
            "{name} has a cargo-fuzz target"
        );
        for (path, data) in seeds
            .iter()
            .chain(&inputs(&root.join("regressions").join(name)))
        {
            let run = std::panic::catch_unwind(|| harness(data));
            assert!(run.is_ok(), "{path} fails {name}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_inputs_pass_every_harness(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        for (_, harness) in TARGETS {
            harness(&data);
        }
    }

    #[test]
    fn generated_text_passes_every_harness(text in "(\\PC|[\r\n\t\u{0}\u{1b}\u{2028}\"{}:\\[\\],.=&/ ]){0,200}") {
        for (_, harness) in TARGETS {
            harness(text.as_bytes());
        }
    }
}
