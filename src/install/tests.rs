//! Unit tests of planning and executing an install, with a script standing in for the builder.

use std::collections::BTreeMap;
use std::process::Command;

use super::*;
use crate::fetch::{FetchOptions, Fetcher};
use crate::manifest::resolve::Resolution;
use crate::manifest::resolve::{Request, resolve};
use crate::manifest::{Arch, Digest, Manifest};
use crate::store::Layout;
use crate::store::Store;
use crate::toolchain::SourceReceipt;
use crate::toolchain::{Origin, Receipt};
use crate::ui::Ui;

fn setup() -> (tempfile::TempDir, Manifest, Store, Resolution) {
    let home = tempfile::tempdir().unwrap();
    let manifest = Manifest::embedded().unwrap();
    let store = Store::open(Layout::new(home.path().join("kbin"))).unwrap();
    let resolution = resolve(
        &manifest,
        &Request {
            version: "1.30".into(),
            overrides: Vec::new(),
            allow_skew: false,
        },
    )
    .unwrap();
    (home, manifest, store, resolution)
}

fn opts(only: &[&str], from_source: &[&str]) -> Options {
    Options {
        name: "t".into(),
        arch: Arch::host().unwrap_or(Arch::Amd64),
        only: only.iter().map(|s| s.to_string()).collect(),
        require_pinned: false,
        require_verified: false,
        jobs: 2,
        from_source: from_source.iter().map(|s| s.to_string()).collect(),
        no_images: false,
    }
}

/// Builds crictl as a shell script that prints a version, the way a real build would put
/// its output into the store.
struct ScriptBuilder {
    calls: std::sync::Mutex<Vec<String>>,
}

impl SourceBuilder for ScriptBuilder {
    fn build(
        &self,
        store: &Store,
        build: &PlannedBuild,
        _arch: Arch,
        _ui: &Ui,
    ) -> Result<Built, Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.calls.lock().unwrap().push(build.component.clone());
        let dir = tempfile::tempdir()?;
        let mut binaries = BTreeMap::new();
        for o in &build.outputs {
            let p = dir.path().join(&o.binary);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho {} version v{}-src\n",
                    o.binary, build.version
                ),
            )?;
            binaries.insert(o.binary.clone(), store.insert_copy(&p)?);
        }
        Ok(Built {
            binaries,
            source: SourceReceipt {
                repository: "file:///src/cri-tools".into(),
                git_ref: format!("v{}", build.version),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                go: Some("1.22.5".into()),
                recipe: Digest::sha256_of(&[7; 32]),
                outputs: None,
                dropped_tags: Vec::new(),
                upstream: None,
                reproduction: Default::default(),
            },
        })
    }
}

#[test]
fn from_source_components_are_planned_as_builds_not_downloads() {
    let (_home, manifest, store, resolution) = setup();
    let plan = plan(&manifest, &store, &resolution, &opts(&[], &["etcd"])).unwrap();
    assert!(plan.artifacts.iter().all(|a| a.component != "etcd"));
    assert!(plan.binaries.iter().all(|b| b.component != "etcd"));
    assert!(plan.artifacts.iter().any(|a| a.component == "kubernetes"));
    assert_eq!(plan.builds.len(), 1);
    let b = &plan.builds[0];
    assert_eq!(b.component, "etcd");
    assert_eq!(Some(&b.version), resolution.version_of("etcd"));
    let paths: Vec<&str> = b.outputs.iter().map(|o| o.path.as_str()).collect();
    assert!(
        paths.contains(&"bin/etcd") && paths.contains(&"bin/etcdctl"),
        "{paths:?}"
    );
    assert!(!plan.up_to_date);
}

#[test]
fn from_source_of_an_unknown_component_is_refused() {
    let (_home, manifest, store, resolution) = setup();
    let err = plan(&manifest, &store, &resolution, &opts(&[], &["kubectl"])).unwrap_err();
    assert!(
        matches!(&err, InstallError::UnknownFromSource { name, .. } if name == "kubectl"),
        "{err}"
    );
}

#[test]
fn a_source_build_is_linked_and_recorded_with_its_provenance() {
    let (_home, manifest, store, resolution) = setup();
    let plan = plan(
        &manifest,
        &store,
        &resolution,
        &opts(&["crictl"], &["crictl"]),
    )
    .unwrap();
    assert!(plan.artifacts.is_empty(), "{:?}", plan.artifacts);
    let fetcher = Fetcher::new(FetchOptions::default()).unwrap();
    let builder = ScriptBuilder {
        calls: Default::default(),
    };
    let ui = Ui::new(false, true, 0);
    let out = execute(&manifest, &store, &fetcher, &plan, 2, &builder, &ui).unwrap();
    assert_eq!(*builder.calls.lock().unwrap(), vec!["crictl".to_string()]);
    assert_eq!(out.downloaded, 0);

    let receipt = Receipt::load(&store.layout().receipt_path("t")).unwrap();
    assert_eq!(receipt, out.receipt);
    assert_eq!(receipt.components.len(), 1);
    let c = &receipt.components[0];
    assert_eq!((c.name.as_str(), c.origin), ("crictl", Origin::Source));
    assert!(c.artifacts.is_empty());
    let src = c
        .source
        .as_ref()
        .expect("a source build records its provenance");
    assert_eq!(src.commit, "0123456789abcdef0123456789abcdef01234567");
    let bin = &c.binaries[0];
    assert_eq!(bin.path, "bin/crictl");
    let installed = store.layout().toolchain_dir("t").join("bin/crictl");
    let ran = Command::new(&installed).output().unwrap();
    let said = String::from_utf8_lossy(&ran.stdout).trim().to_string();
    assert_eq!(said, format!("crictl version v{}-src", c.version));
    assert_eq!(bin.reports.as_deref(), Some(said.as_str()));
    // The toolchain's file is the blob the builder stored, not a copy.
    use std::os::unix::fs::MetadataExt;
    let blob = store.get(&bin.digest).unwrap();
    assert_eq!(
        std::fs::metadata(&installed).unwrap().ino(),
        std::fs::metadata(&blob).unwrap().ino()
    );
}
