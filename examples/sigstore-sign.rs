//! Sign files with a throwaway test Sigstore (for `scripts/bench-install`'s signed run):
//! `sigstore-sign ROOT_JSON FILE...` writes the test trust root to ROOT_JSON and each
//! `FILE.sigstore.json`, a bundle by the Kubernetes release identity. Only a kbin built with
//! debug assertions (the `release-test-root` profile) can be pointed at such a root.

#[path = "../tests/common/sigstore.rs"]
mod sigstore;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((root, files)) = args.split_first() else {
        eprintln!("usage: sigstore-sign ROOT_JSON FILE...");
        std::process::exit(2);
    };
    let ts = sigstore::TestSigstore::new();
    std::fs::write(root, ts.trusted_root()).expect("write the trust root");
    for f in files {
        let blob = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let s = ts.sign(&blob, &sigstore::Sign::default());
        std::fs::write(format!("{f}.sigstore.json"), s.bundle).expect("write the bundle");
    }
}
