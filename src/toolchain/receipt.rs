//! `toolchain.lock`: the receipt of a toolchain.
//!
//! ```toml
//! # toolchain.lock: written by kbin; do not edit.
//! schema = 1
//! name = "1.30"
//! kubernetes = "1.30.14"
//! arch = "amd64"
//! manifest = "sha256:…"                 # digest of the manifest that resolved it
//! created = "2026-11-22T23:00:00Z"
//!
//! [images]
//! coredns = "1.11.1"
//! pause = "3.9"
//!
//! [[component]]
//! name = "etcd"
//! version = "3.5.16"
//! origin = "download"                   # or "source"
//!
//! [[component.artifact]]
//! url = "https://github.com/etcd-io/etcd/releases/download/v3.5.16/etcd-v3.5.16-linux-amd64.tar.gz"
//! digest = "sha256:…"
//! pinned = true                         # false: checked against upstream's checksum file only
//! signed = { identity = "…", issuer = "…" }  # upstream's signature verified (when it has one)
//!
//! [[component.binary]]
//! name = "etcd"
//! path = "bin/etcd"                     # relative to the toolchain directory
//! digest = "sha256:…"                   # the binary's own bytes (its blob in the store)
//! size = 23068672                       # their length, checked by every install
//! reports = "etcd Version: 3.5.16"      # what `etcd --version` printed (host arch only)
//!
//! [component.source]                    # only for origin = "source"
//! repository = "https://github.com/etcd-io/etcd"
//! ref = "v3.5.16"
//! commit = "…"
//! go = "1.22.5"
//! recipe = "sha256:…"
//! outputs = "sha256:…"                  # over the sorted `name digest` lines of its binaries
//!
//! [component.source.upstream]           # how upstream builds that release
//! go = "1.22.5"                         # from the tree (.go-version, or the release row's file)
//! go_from = ".go-version"
//! settings = { "-ldflags" = "…", "-trimpath" = "true" }   # the release row's
//!
//! [component.source.reproduction.etcd]  # per binary
//! upstream = "reproduces upstream"      # or "differs: …", "not comparable: Go 1.27.3 vs 1.22.5"
//! rebuild = "same digest …"             # --check-reproducible: a second build elsewhere
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::manifest::{Arch, Digest, Images};

/// The receipt schema written by this kbin.
pub const RECEIPT_SCHEMA: u32 = 1;

/// Errors reading or writing a receipt.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] crate::fsx::PathIo),
    /// Not a receipt this kbin understands.
    #[error("{path} is not a valid toolchain receipt: {message}")]
    Invalid {
        /// Its path.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Where a component's binaries came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A verified upstream release artifact.
    Download,
    /// Built from git by `kbin build --from-source`.
    Source,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Download => "download",
            Origin::Source => "source",
        })
    }
}

/// The receipt of one toolchain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Format version.
    pub schema: u32,
    /// The toolchain's name.
    pub name: String,
    /// The Kubernetes (API server) version.
    pub kubernetes: Version,
    /// The architecture of its binaries.
    pub arch: Arch,
    /// Digest of the manifest that resolved it.
    pub manifest: Digest,
    /// When it was installed (RFC 3339, UTC).
    pub created: String,
    /// Image versions the configs refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Images>,
    /// Components, in manifest order.
    #[serde(rename = "component", default)]
    pub components: Vec<ComponentReceipt>,
    /// The images pulled with it (`kbin install` without `--no-images`): each archive is
    /// `images/<name>-<tag>.tar` in the toolchain.
    #[serde(rename = "image", default, skip_serializing_if = "Vec::is_empty")]
    pub pulled: Vec<crate::images::PulledImage>,
}

/// One component in a toolchain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentReceipt {
    /// The component's name.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// Download or source build.
    pub origin: Origin,
    /// Artifacts downloaded for it.
    #[serde(rename = "artifact", default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactReceipt>,
    /// Its binaries in the toolchain.
    #[serde(rename = "binary", default)]
    pub binaries: Vec<BinaryReceipt>,
    /// Provenance of a source build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceReceipt>,
}

/// A downloaded artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactReceipt {
    /// The upstream URL (before any mirror rewrite).
    pub url: String,
    /// Its digest (as verified).
    pub digest: Digest,
    /// Whether the digest came from the manifest's pins (true) or upstream's checksum file.
    pub pinned: bool,
    /// Set when the digest is trust on first use: read by `kbin update` from upstream's
    /// checksum file (where, and when), not pinned by a kbin release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tofu: Option<TofuRecord>,
    /// Set when upstream's signature of it was verified (offline, against the compiled-in
    /// trust root): who signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::trust::Policy>,
}

impl ArtifactReceipt {
    /// What vouched for it: its pin, else its signature, else the checksum file alone.
    pub fn vouch(&self) -> crate::trust::Vouch {
        match (&self.pinned, &self.signed) {
            (true, _) => crate::trust::Vouch::Pinned,
            (false, Some(s)) => crate::trust::Vouch::Signed {
                identity: s.identity.clone(),
                issuer: s.issuer.clone(),
            },
            (false, None) => crate::trust::Vouch::ChecksumFile,
        }
    }
}

impl ComponentReceipt {
    /// What vouched for its downloaded binaries, the weakest of its artifacts' (none for a
    /// source build).
    pub fn vouch(&self) -> Option<crate::trust::Vouch> {
        use crate::trust::Vouch;
        let rank = |v: &Vouch| match v {
            Vouch::Pinned => 2,
            Vouch::Signed { .. } => 1,
            Vouch::ChecksumFile => 0,
        };
        self.artifacts
            .iter()
            .map(ArtifactReceipt::vouch)
            .min_by_key(rank)
    }
}

/// Where and when a trust-on-first-use digest was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TofuRecord {
    /// The checksum file's upstream URL.
    pub source: String,
    /// When `kbin update` read it (RFC 3339, UTC).
    pub fetched: String,
}

/// A binary in the toolchain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryReceipt {
    /// Its name.
    pub name: String,
    /// Its path relative to the toolchain directory (`bin/etcd`).
    pub path: String,
    /// The sha256 of its bytes: its blob in the store.
    pub digest: Digest,
    /// Its size in bytes: checked on every install and `show-versions` without reading it
    /// (absent in receipts written before kbin recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// What the binary printed when asked its version (absent for another arch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<String>,
}

/// Provenance of a source build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceReceipt {
    /// The repository cloned.
    pub repository: String,
    /// The ref checked out.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The Go version used (`1.22.5`), if Go was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<String>,
    /// Digest of the recipe as run (command and environment).
    pub recipe: Digest,
    /// Digest of the build's outputs: sha256 over sorted `name digest` lines of its binaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Digest>,
    /// Build tags of upstream's release build that this build left out because their library
    /// was missing (`libpathrs`): what the binaries lack compared with the released ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_tags: Vec<String>,
    /// How upstream builds this release, as the source tree and the recipe's release row say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamBuild>,
    /// Per binary: does it reproduce upstream's, and a second build of its own?
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reproduction: BTreeMap<String, Reproduction>,
}

/// How upstream builds a release: read from the source tree (the Go version) and the recipe's
/// release row (the `go build` settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBuild {
    /// The Go version upstream builds with, when the tree says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<String>,
    /// Where that was read (`.go-version`, `Dockerfile: ARG GO_VERSION=`).
    pub go_from: String,
    /// The build settings of upstream's release binaries (`-ldflags`, `-tags`, `-trimpath`,
    /// ...), as `go version -m` names them; empty when the recipe does not know them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

/// What kbin found out about one built binary's reproducibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reproduction {
    /// Against upstream's released binary: `reproduces upstream`, `differs: …` or
    /// `not comparable: …`.
    pub upstream: String,
    /// Against a second build in another directory (`--check-reproducible`): `same digest`, or
    /// `differs: …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<String>,
}

impl Receipt {
    /// Read and check a receipt.
    pub fn load(path: &Path) -> Result<Self, ReceiptError> {
        let text = std::fs::read_to_string(path).map_err(crate::fsx::at::<ReceiptError>(
            "cannot read the toolchain receipt",
            path,
        ))?;
        Self::parse(&text, path)
    }

    /// Parse receipt text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ReceiptError> {
        let invalid = |message: String| ReceiptError::Invalid {
            path: path.to_owned(),
            message,
        };
        let r: Receipt =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        if r.schema != RECEIPT_SCHEMA {
            return Err(invalid(format!(
                "schema {} (this kbin writes {RECEIPT_SCHEMA}); reinstall the toolchain",
                r.schema
            )));
        }
        Ok(r)
    }

    /// The receipt as TOML, with a header comment.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("receipts always serialize");
        format!("# toolchain.lock: written by kbin; do not edit.\n{body}")
    }

    /// Every digest the receipt names: its binaries' blobs, its artifacts, its images' archives
    /// and their kept signatures (what `cache gc` must keep).
    pub fn digests(&self) -> impl Iterator<Item = &Digest> {
        self.components
            .iter()
            .flat_map(|c| {
                c.binaries
                    .iter()
                    .map(|b| &b.digest)
                    .chain(c.artifacts.iter().map(|a| &a.digest))
            })
            .chain(
                self.pulled
                    .iter()
                    .flat_map(|i| std::iter::once(&i.archive).chain(i.signature_blobs())),
            )
    }

    /// The component called `name` (the first, when --with split it).
    pub fn component(&self, name: &str) -> Option<&ComponentReceipt> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The version of component `name`.
    pub fn version_of(&self, name: &str) -> Option<&Version> {
        self.component(name).map(|c| &c.version)
    }

    /// The component receipt and binary receipt of `binary`.
    pub fn binary(&self, binary: &str) -> Option<(&ComponentReceipt, &BinaryReceipt)> {
        self.components
            .iter()
            .find_map(|c| c.binaries.iter().find(|b| b.name == binary).map(|b| (c, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Receipt {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        Receipt {
            schema: RECEIPT_SCHEMA,
            pulled: Vec::new(),
            name: "1.30".into(),
            kubernetes: Version::new(1, 30, 14),
            arch: Arch::Amd64,
            manifest: d.clone(),
            created: "2026-11-22T23:00:00Z".into(),
            images: Some(Images {
                coredns: "1.11.1".into(),
                pause: "3.9".into(),
            }),
            components: vec![ComponentReceipt {
                name: "etcd".into(),
                version: Version::new(3, 5, 16),
                origin: Origin::Source,
                artifacts: vec![],
                binaries: vec![BinaryReceipt {
                    name: "etcd".into(),
                    path: "bin/etcd".into(),
                    digest: d.clone(),
                    size: None,
                    reports: Some("etcd Version: 3.5.16".into()),
                }],
                source: Some(SourceReceipt {
                    repository: "https://github.com/etcd-io/etcd".into(),
                    git_ref: "v3.5.16".into(),
                    commit: "0".repeat(40),
                    go: Some("1.22.5".into()),
                    recipe: d.clone(),
                    outputs: Some(d),
                    dropped_tags: Vec::new(),
                    upstream: None,
                    reproduction: Default::default(),
                }),
            }],
        }
    }

    #[test]
    fn receipt_round_trips_through_toml() {
        let r = sample();
        let text = r.to_toml();
        assert!(text.starts_with("# toolchain.lock"));
        assert!(text.contains("[[component.binary]]"), "{text}");
        assert_eq!(Receipt::parse(&text, Path::new("x")).unwrap(), r);
        assert_eq!(r.binary("etcd").unwrap().1.path, "bin/etcd");
    }

    #[test]
    fn receipt_of_another_schema_is_refused() {
        let text = sample().to_toml().replace("schema = 1", "schema = 9");
        let e = Receipt::parse(&text, Path::new("/x/toolchain.lock")).unwrap_err();
        assert!(e.to_string().contains("schema 9"), "{e}");
    }
}
