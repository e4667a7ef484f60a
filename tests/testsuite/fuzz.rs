//! Property-based fuzzing of the parsers that read untrusted bytes (issue 15): the manifest
//! loader, toolchain.lock, the cluster spec, and `.tar.gz` extraction. Each target mutates a real
//! input (the embedded manifest, a receipt, a cluster.toml, an archive kbin would unpack) or
//! generates arbitrary bytes, and asserts the parser returns (Ok or one error) without panicking
//! or, for archives, writing outside its destination.
//!
//! `KBIN_FUZZ_CASES` sets the cases per target (default 256, what CI runs; e.g.
//! `KBIN_FUZZ_CASES=200000 cargo test --release --test testsuite fuzz::` for a long run). Checksum files are
//! fuzzed beside their parser (`src/fetch/checksum.rs`), which is private to the crate.
//!
//! The mutation fuzzer of `fuzz/harness.rs` runs here too: every target briefly (at most
//! `KBIN_FUZZ_EXECS` executions, default 3000, and [`BRIEF`] of wall time each), and every
//! file of `fuzz/corpus/` and `fuzz/regressions/` once. Long runs are
//! `cargo run --release --example fuzz -- all --execs 10000000`.

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;

#[path = "../../fuzz/harness.rs"]
mod harness;

/// The most wall time each target of the mutation fuzzer gets in `cargo test`.
const BRIEF: std::time::Duration = std::time::Duration::from_secs(3);

#[test]
fn every_mutation_fuzz_target_runs_briefly_without_a_crash() {
    let execs = std::env::var("KBIN_FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    // A different seed each run (the time), printed so that a failure can be replayed.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    for t in harness::targets() {
        let r = harness::fuzz(&t, execs, Some(BRIEF), seed, 1);
        println!(
            "{}: {} execs in {:.1} s (seed {seed})",
            r.target, r.execs, r.secs
        );
        assert!(r.execs > 0, "{}: no execution", r.target);
        assert!(
            r.crashes.is_empty(),
            "{}: crashes with seed {seed}, saved as {:?}",
            r.target,
            r.crashes
        );
    }
}

#[test]
fn the_fuzz_corpus_and_every_regression_replay_cleanly() {
    for t in harness::targets() {
        let corpus = harness::files("corpus", t.name);
        assert!(!corpus.is_empty(), "fuzz/corpus/{}/ is empty", t.name);
        let regressions = harness::files("regressions", t.name);
        let failed = harness::replay(&t, &[corpus, regressions].concat());
        assert!(failed.is_empty(), "{}: {failed:?}", t.name);
    }
}

#[test]
fn the_fuzz_seeds_are_valid_inputs() {
    // Seeds that the parser refuses would waste every mutation on the first error.
    for (path, text) in harness::files("corpus", "manifest")
        .into_iter()
        .chain(harness::files("corpus", "manifest-overlay"))
    {
        let text = String::from_utf8(text).unwrap();
        kbin::manifest::Manifest::parse(&text, kbin::manifest::Origin::File(path.clone()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for (path, text) in harness::files("corpus", "lock") {
        let text = String::from_utf8(text).unwrap();
        kbin::toolchain::receipt::Receipt::parse(&text, &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for (path, text) in harness::files("corpus", "spec") {
        let input: kbin::r#gen::spec::SpecInput =
            toml::from_str(std::str::from_utf8(&text).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        input
            .build()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for (path, text) in harness::files("corpus", "checksum") {
        let text = String::from_utf8(text).unwrap();
        let found = harness::CHECKSUM_NAMES
            .iter()
            .filter_map(|n| kbin::fetch::digest_in_checksum_file(&text, n))
            .count();
        assert!(found > 0, "{}: names none of the artifacts", path.display());
    }
    let d = tempfile::tempdir().unwrap();
    for (path, bytes) in harness::files("corpus", "archive") {
        let file = d.path().join("a.tar.gz");
        std::fs::write(&file, bytes).unwrap();
        let dest = d.path().join(path.file_name().unwrap());
        kbin::archive::extract_tar_gz(&file, &dest, &kbin::archive::Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn cases() -> u32 {
    std::env::var("KBIN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// `text` with `junk` inserted at `pos` (moved back to a char boundary).
fn splice(text: &str, pos: usize, junk: &str) -> String {
    let mut p = pos.min(text.len());
    while !text.is_char_boundary(p) {
        p -= 1;
    }
    let mut t = text.to_owned();
    t.insert_str(p, junk);
    t
}

/// `text` with the bytes in `range` removed (at char boundaries).
fn cut(text: &str, from: usize, len: usize) -> String {
    let mut a = from.min(text.len());
    while !text.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = (a + len).min(text.len());
    while !text.is_char_boundary(b) {
        b -= 1;
    }
    format!("{}{}", &text[..a], &text[b..])
}

const RECEIPT: &str = r#"schema = 1
name = "1.30"
kubernetes = "1.30.14"
arch = "amd64"
manifest = "sha256:abababababababababababababababababababababababababababababababab"
created = "2026-11-22T23:00:00Z"

[images]
coredns = "1.11.3"
pause = "3.9"

[[component]]
name = "etcd"
version = "3.5.21"
origin = "download"

[[component.binary]]
name = "etcd"
path = "bin/etcd"
digest = "sha256:abababababababababababababababababababababababababababababababab"
"#;

const SPEC: &str = r#"name = "hard-way"
cluster_ip = "10.0.0.10"
pod_cidr = "10.200.0.0/16"
service_cidr = "10.32.0.0/24"
key_algo = "ecdsa-p256"
host_profile = "sandbox"

[[nodes]]
name = "cp1"
ip = "10.0.0.10"
control_plane = true

[[nodes]]
name = "w1"
ip = "10.0.0.21"
worker = true
"#;

/// A gzip-compressed tar with the given raw entries (name bytes, mode, content), headers written
/// by hand so names and types can be anything a hostile archive holds.
fn tar_gz(entries: &[(Vec<u8>, u8, Vec<u8>)]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, kind, data) in entries {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        h[100..108].copy_from_slice(b"0000755\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[156] = *kind;
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// Every path under `root`, to check nothing was written elsewhere.
fn all_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(all_under(&e.path()));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_manifest_loader_never_panics_on_a_mutated_manifest(
        pos in 0usize..200_000, junk in "\\PC{0,12}", cut_at in 0usize..200_000, cut_len in 0usize..64
    ) {
        let text = kbin::manifest::EMBEDDED;
        let text = cut(&splice(text, pos, &junk), cut_at, cut_len);
        let _ = kbin::manifest::Manifest::parse(&text, kbin::manifest::Origin::Embedded);
    }

    #[test]
    fn a_mutated_receipt_parses_or_is_one_error(
        pos in 0usize..2_000, junk in "\\PC{0,16}", cut_at in 0usize..2_000, cut_len in 0usize..32
    ) {
        let text = cut(&splice(RECEIPT, pos, &junk), cut_at, cut_len);
        let _ = kbin::toolchain::receipt::Receipt::parse(&text, Path::new("toolchain.lock"));
    }

    #[test]
    fn a_mutated_cluster_spec_builds_or_is_one_error(
        pos in 0usize..2_000, junk in "\\PC{0,16}", cut_at in 0usize..2_000, cut_len in 0usize..32
    ) {
        let text = cut(&splice(SPEC, pos, &junk), cut_at, cut_len);
        if let Ok(input) = toml::from_str::<kbin::r#gen::spec::SpecInput>(&text) {
            let _ = input.build();
        }
    }

    #[test]
    fn spec_values_from_anywhere_build_or_are_one_error(
        name in "\\PC{0,70}", ip in "[0-9a-f:.]{0,40}", cidr in "[0-9a-f:./]{0,45}",
        dns in "[0-9a-f:.]{0,40}", domain in "\\PC{0,40}", validity in "[0-9ydhms]{0,8}"
    ) {
        let mut input = kbin::r#gen::spec::SpecInput {
            name: Some(name),
            cluster_ip: Some(ip.clone()),
            pod_cidr: Some(cidr.clone()),
            service_cidr: Some(cidr),
            cluster_dns: Some(dns),
            cluster_domain: Some(domain),
            cert_validity: Some(validity),
            ..Default::default()
        };
        let _ = input.add_nodes(&[format!("cp1={ip}")], &[format!("w1={ip}")]);
        let _ = input.build();
    }

    #[test]
    fn hostile_archives_unpack_inside_their_destination_or_fail(
        entries in proptest::collection::vec(
            (
                prop_oneof![
                    "[a-z/.]{1,40}".prop_map(String::into_bytes),
                    Just(b"../escape".to_vec()),
                    Just(b"/abs/path".to_vec()),
                    proptest::collection::vec(any::<u8>(), 1..100),
                ],
                prop_oneof![Just(b'0'), Just(b'1'), Just(b'2'), Just(b'3'), Just(b'5'), any::<u8>()],
                proptest::collection::vec(any::<u8>(), 0..600),
            ),
            0..6,
        ),
        raw in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let d = tempfile::tempdir().unwrap();
        let box_dir = d.path().join("box");
        std::fs::create_dir(&box_dir).unwrap();
        for (i, bytes) in [tar_gz(&entries), raw].into_iter().enumerate() {
            let archive = d.path().join(format!("a{i}.tar.gz"));
            std::fs::write(&archive, bytes).unwrap();
            let dest = box_dir.join(format!("out{i}"));
            let limits = kbin::archive::Limits { max_bytes: 1 << 20, max_entries: 100 };
            let _ = kbin::archive::extract_tar_gz(&archive, &dest, &limits);
        }
        // Nothing outside box/ but the inputs; inside, only out0/, out1/ (or nothing).
        let mut outside: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        outside.sort();
        prop_assert_eq!(outside, vec!["a0.tar.gz".to_owned(), "a1.tar.gz".to_owned(), "box".to_owned()]);
        for p in all_under(&box_dir) {
            let rel = p.strip_prefix(&box_dir).unwrap();
            prop_assert!(rel.starts_with("out0") || rel.starts_with("out1"), "{}", p.display());
            if let Ok(target) = std::fs::read_link(&p) {
                let resolved = p.parent().unwrap().join(&target);
                prop_assert!(!target.is_absolute(), "absolute link {}", p.display());
                prop_assert!(
                    resolved.components().filter(|c| matches!(c, std::path::Component::ParentDir)).count()
                        <= rel.components().count(),
                    "link escapes: {} -> {}", p.display(), target.display()
                );
            }
        }
    }
}
