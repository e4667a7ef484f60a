//! The manifest (`toolchains.toml`): what kbin knows about components, releases and digests.
//!
//! [`Manifest::parse`] is the border: it checks the schema first, deserializes private "wire"
//! structs, then validates every reference once (components a release or rule names, templates,
//! digests) and returns a model whose invariants later code trusts. [`resolve`] turns a requested
//! Kubernetes version into a coherent set of component versions.

mod types;

pub mod overlay;
pub mod resolve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub use overlay::{Overlay, Tofu};
pub use types::{Arch, Digest, DigestAlgo, Minor, ParseError};

/// The manifest schema this kbin understands.
pub const SCHEMA: u32 = 1;

/// The manifest compiled into the binary.
pub const EMBEDDED: &str = include_str!("../../toolchains.toml");

/// Components every manifest must define: resolution, install and generation rely on them.
pub const REQUIRED_COMPONENTS: &[&str] = &[
    "kubernetes",
    "etcd",
    "containerd",
    "runc",
    "cni-plugins",
    "crictl",
];

/// The component whose version is "the Kubernetes version".
pub const KUBERNETES: &str = "kubernetes";

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read the manifest {path}")]
    Read {
        /// The manifest's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the shape of a manifest.
    #[error("the manifest {origin} is not valid: {message}")]
    Syntax {
        /// Where the manifest came from.
        origin: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A schema this kbin does not know.
    #[error(
        "the manifest {origin} has schema {found}, but this kbin reads schema {SCHEMA} \
         (use a kbin that matches the manifest, or a manifest written for this kbin)"
    )]
    Schema {
        /// Where the manifest came from.
        origin: String,
        /// The schema it declares (0 when missing).
        found: i64,
    },
    /// Parsed, but inconsistent.
    #[error("the manifest {origin} is inconsistent: {problem}")]
    Invalid {
        /// Where the manifest came from.
        origin: String,
        /// What is wrong, naming the table and value.
        problem: String,
    },
}

/// Where a manifest came from, for messages and the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The copy compiled into kbin.
    Embedded,
    /// A file given with `--manifest` or `KBIN_MANIFEST`.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Embedded => f.write_str("(built into kbin)"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from.
    pub origin: Origin,
    /// sha256 of its text: recorded in receipts so a toolchain says which manifest made it.
    pub digest: Digest,
    /// Components in manifest order.
    pub components: Vec<Component>,
    /// Version-skew rules.
    pub rules: Vec<SkewRule>,
    /// Known Kubernetes minors, oldest first.
    pub releases: BTreeMap<Minor, Release>,
    /// Pinned digests by (pin, arch, version).
    pub pins: BTreeMap<PinKey, Digest>,
    /// Trust-on-first-use digests from the overlay (`kbin update`), apart from the pins.
    pub tofu: BTreeMap<PinKey, Tofu>,
    /// Component versions the overlay learned, by component (oldest first).
    pub learned: BTreeMap<String, Vec<Version>>,
    /// The overlay merged in, if any.
    pub overlay: Option<PathBuf>,
    /// Who must have signed the images kbin pulls (`[images.signer]`; the built-in manifest's
    /// when this one has none).
    pub image_signer: crate::trust::Policy,
}

/// A component: a set of binaries released and built together.
#[derive(Debug, Clone)]
pub struct Component {
    /// Its name (`etcd`).
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Binaries it always provides.
    pub binaries: Vec<String>,
    /// Binaries taken from its artifact when a release has them.
    pub optional_binaries: Vec<String>,
    /// Where its binaries go in a toolchain, relative to the toolchain's directory (`bin`).
    pub install_dir: String,
    /// Its git repository.
    pub repository: String,
    /// The tag of a version: a template with `{version}`.
    pub tag: String,
    /// Arguments that make a binary print its version.
    pub version_args: Vec<String>,
    /// Per-binary exceptions to `version_args`.
    pub version_args_override: BTreeMap<String, Vec<String>>,
    /// Release artifacts in order of preference.
    pub artifacts: Vec<ArtifactTemplate>,
    /// How to build it from source.
    pub recipe: Option<Recipe>,
    /// Commits that a version's tag must resolve to (40 hex): a source build of that version
    /// refuses a tag that moved (a supply-chain warning sign).
    pub commits: BTreeMap<Version, String>,
    /// What each range of its versions ships (`[[component.ships]]`); empty: every binary at
    /// every version.
    pub ships: Vec<Ships>,
    /// Where `kbin update` learns its new releases (`[component.releases]`).
    pub releases: Option<Listing>,
    /// Who signs its artifacts (`[component.signer]`): the identity and OIDC issuer a
    /// signature's certificate must name. Required when an artifact has a `signature` or `detached`.
    pub signer: Option<crate::trust::Policy>,
    /// The OpenPGP keyring its `.asc` signatures are checked against (`keyring = "runc"`: one of
    /// `trust::openpgp::KEYRINGS`). Required when an artifact has an `asc`.
    pub keyring: Option<String>,
}

/// Where a component's releases are listed upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The URL (template with `{minor}` for per-minor files).
    pub url: String,
    /// What it holds.
    pub format: ListingFormat,
}

/// The shape of a release listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListingFormat {
    /// dl.k8s.io's `stable-1.N.txt`: one line, the newest patch of minor N (`v1.30.14`); the
    /// URL has `{minor}`, fetched once per known minor.
    StableTxt,
    /// GitHub's release listing (`api.github.com/repos/OWNER/REPO/releases`): a JSON array of
    /// objects with `tag_name`, `draft` and `prerelease`.
    Github,
}

/// One `[[component.ships]]` row: the binaries a range of a component's versions ships, and
/// where that was read upstream.
#[derive(Debug, Clone)]
pub struct Ships {
    /// The versions it covers.
    pub versions: VersionReq,
    /// The component's binaries and optional binaries those versions ship.
    pub binaries: Vec<String>,
    /// The upstream file (repository, commit, path) the row was read from.
    pub source: String,
}

/// The binaries of a component at one version, as its `[[component.ships]]` row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    /// Required binaries: an archive that lacks one of these is an error.
    pub required: Vec<String>,
    /// Optional binaries: taken when the artifact has them.
    pub optional: Vec<String>,
}

impl Component {
    /// The `[[component.ships]]` row that covers `version` (the first that matches).
    pub fn ships_at(&self, version: &Version) -> Option<&Ships> {
        self.ships.iter().find(|s| s.versions.matches(version))
    }

    /// The binaries this component has at `version`: its binaries and optional binaries that
    /// the covering row lists (all of them when the component has no rows). `None` when it has
    /// rows and none covers `version`: kbin does not know what that version ships.
    pub fn shipped(&self, version: &Version) -> Option<Shipped> {
        if self.ships.is_empty() {
            return Some(Shipped {
                required: self.binaries.clone(),
                optional: self.optional_binaries.clone(),
            });
        }
        let row = self.ships_at(version)?;
        let keep = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|b| row.binaries.contains(b))
                .cloned()
                .collect()
        };
        Some(Shipped {
            required: keep(&self.binaries),
            optional: keep(&self.optional_binaries),
        })
    }

    /// The version ranges of its `[[component.ships]]` rows, for messages (`>=3.4.0, <3.5.0; >=3.5.0`).
    pub fn ships_ranges(&self) -> String {
        self.ships
            .iter()
            .map(|s| s.versions.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// How an artifact is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactFormat {
    /// A bare executable.
    Binary,
    /// A gzip-compressed tarball.
    #[serde(rename = "tar.gz")]
    TarGz,
}

/// An upstream release artifact, as templates.
#[derive(Debug, Clone)]
pub struct ArtifactTemplate {
    /// The pin name template (`{binary}`, `etcd`): pins are keyed `<pin>/<arch>/<version>`.
    pub pin: String,
    /// Download URL template.
    pub url: String,
    /// URL template of upstream's checksum file (bare digest or `sha256sum` format).
    pub checksum_url: Option<String>,
    /// URL template of upstream's Sigstore bundle for it (`.sigstore.json`, or cosign's
    /// `--bundle` JSON), verified offline against the component's signer.
    pub signature: Option<String>,
    /// URL templates of upstream's detached signature (`.sig` + `.cert`, as dl.k8s.io
    /// publishes them): no log entry beside them, so `kbin update` looks it up in Rekor.
    pub detached: Option<Detached>,
    /// The first version upstream signed (`signed-since`): older ones publish no signature,
    /// so none is asked for; from it on, a missing signature is an error, not "unsigned".
    pub signed_since: Option<Version>,
    /// URL template of upstream's OpenPGP detached signature (`asc = "…/runc.{arch}.asc"`),
    /// verified offline against the component's keyring.
    pub asc: Option<String>,
    /// How it is packed.
    pub format: ArtifactFormat,
    /// For archives: the member path of each binary (template with `{binary}`).
    pub layout: Option<String>,
    /// Binaries this artifact provides (all of the component's when the manifest says none).
    pub binaries: Vec<String>,
}

/// A detached keyless signature (`detached = { sig = "…", cert = "…" }`): the `.sig` (base64 of
/// the DER ECDSA signature) and `.cert` (base64 of the PEM Fulcio certificate) URLs, as
/// templates on an [`ArtifactTemplate`] or filled in on an [`ArtifactChoice`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detached {
    /// The `.sig` URL.
    pub sig: String,
    /// The `.cert` URL.
    pub cert: String,
}

impl Detached {
    /// Where the bundle kbin makes of this signature and its Rekor entry is kept in a mirror
    /// export (and looked for by `kbin update` through a mirror): beside the `.sig`, named as
    /// Sigstore names bundles (`kubelet.sig` → `kubelet.sigstore.json`).
    pub fn bundle_url(&self) -> String {
        match self.sig.strip_suffix(".sig") {
            Some(base) => format!("{base}.sigstore.json"),
            None => format!("{}.sigstore.json", self.sig),
        }
    }
}

/// A build recipe: data, so a user can add or fix one without touching code.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The command (argv), with placeholders.
    pub command: Vec<String>,
    /// Run once per binary (`{binary}` in the command) instead of once for all.
    pub per_binary: bool,
    /// Environment added to the clean build environment.
    pub env: BTreeMap<String, String>,
    /// Binary name (or `{binary}`) to its output path in the work tree.
    pub outputs: BTreeMap<String, String>,
    /// Known environment fixes keyed by component and Go version.
    pub go_fixes: Vec<GoFix>,
    /// What upstream's release build of a range of versions has (tags, cgo, prerequisites,
    /// what its binaries report), each row citing the upstream line it comes from.
    pub releases: Vec<ReleaseBuild>,
}

impl Recipe {
    /// The release row for `version`, if the recipe has one (rows do not overlap).
    pub fn release(&self, version: &Version) -> Option<&ReleaseBuild> {
        self.releases.iter().find(|r| r.versions.matches(version))
    }
}

/// What upstream's release build of a range of a component's versions has, which a source
/// build must keep (`[[component.recipe.release]]`).
#[derive(Debug, Clone)]
pub struct ReleaseBuild {
    /// The component versions it covers.
    pub versions: VersionReq,
    /// The upstream line it was read from (`opencontainers/runc@8f2685a4 (v1.5.1):Makefile ...`).
    pub source: String,
    /// The command for these versions, when it differs from the recipe's.
    pub command: Option<Vec<String>>,
    /// Go build tags the binaries must carry (`{tags}` in the command, space-separated).
    pub tags: Vec<String>,
    /// Binary (or `*`) → whether it is built with cgo (`CGO_ENABLED` in its Go build info).
    pub cgo: BTreeMap<String, bool>,
    /// What the build needs on this machine, checked before anything is fetched.
    pub needs: Vec<Need>,
    /// Tags that are dropped, said and recorded, when their library is missing.
    pub drops: Vec<TagDrop>,
    /// What a built binary must say about itself.
    pub reports: Vec<SelfReport>,
    /// Where the tree says which Go upstream builds this release with (`.go-version` when the
    /// row does not say).
    pub go_version: GoVersionSource,
    /// The `-ldflags` of upstream's release build (template: `{version}`, `{commit}`,
    /// `{source_date}`), as `go version -m` shows them; without it a build is not compared with
    /// upstream's binary.
    pub ldflags: Option<String>,
    /// Other `go build` settings of upstream's release build, as `go version -m` names them:
    /// `-trimpath`, `-buildmode=pie`, `GOEXPERIMENT=…`.
    pub flags: Vec<String>,
}

/// Where a source tree names the Go version of upstream's release build: a file, and in it the
/// line starting with `prefix` (the whole file when there is no prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoVersionSource {
    /// The file, relative to the top of the tree.
    pub file: String,
    /// The start of the line holding the version (`ARG GO_VERSION=`).
    pub prefix: Option<String>,
}

impl Default for GoVersionSource {
    fn default() -> Self {
        GoVersionSource {
            file: ".go-version".into(),
            prefix: None,
        }
    }
}

/// A prerequisite of a build: a tool on PATH or a library pkg-config knows.
#[derive(Debug, Clone)]
pub struct Need {
    /// What is needed.
    pub what: NeedKind,
    /// The Debian package that provides it.
    pub package: String,
    /// Why (the tag or step that needs it).
    pub why: String,
}

/// The kind of a [`Need`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeedKind {
    /// A program on PATH.
    Tool(String),
    /// A pkg-config module (`pkg-config --exists NAME`).
    PkgConfig(String),
}

/// A build tag that may be left out when its C library is missing.
#[derive(Debug, Clone)]
pub struct TagDrop {
    /// The tag.
    pub tag: String,
    /// The pkg-config module whose absence drops it.
    pub pkg_config: String,
    /// The Debian package (or project) that provides the library.
    pub package: String,
    /// What to add to the environment to drop it (`RUNC_BUILDTAGS = "-libpathrs"`).
    pub env: BTreeMap<String, String>,
    /// What is lost without it.
    pub why: String,
}

/// A line a built binary must print about itself (`runc --version` lists `libseccomp`).
#[derive(Debug, Clone)]
pub struct SelfReport {
    /// The binary.
    pub binary: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Text its output must contain.
    pub contains: String,
}

/// An environment fix a recipe needs with some Go versions.
#[derive(Debug, Clone)]
pub struct GoFix {
    /// Component versions it applies to.
    pub component_version: VersionReq,
    /// Go versions it applies to.
    pub go: VersionReq,
    /// What to add to the environment.
    pub env: BTreeMap<String, String>,
    /// Why, for the build log and the warning.
    pub why: String,
}

/// A version-skew rule between the Kubernetes version and a component.
#[derive(Debug, Clone)]
pub struct SkewRule {
    /// The component it constrains.
    pub component: String,
    /// Kubernetes versions it applies to.
    pub kubernetes: VersionReq,
    /// The requirement, with `{minor}` / `{next_minor}` placeholders.
    pub requires: String,
    /// Why, shown when it is violated.
    pub why: String,
}

impl SkewRule {
    /// The requirement for Kubernetes `kube`, placeholders filled in.
    pub fn requirement(&self, kube: &Version) -> Result<VersionReq, semver::Error> {
        let minor = Minor::of(kube);
        let next = Minor {
            major: minor.major,
            minor: minor.minor + 1,
        };
        VersionReq::parse(
            &self
                .requires
                .replace("{minor}", &minor.to_string())
                .replace("{next_minor}", &next.to_string()),
        )
    }
}

/// What kbin knows about one Kubernetes minor.
#[derive(Debug, Clone)]
pub struct Release {
    /// The minor.
    pub minor: Minor,
    /// The newest known patch.
    pub latest: Version,
    /// Every known patch, oldest first.
    pub patches: Vec<Version>,
    /// Component defaults, or why there are none.
    pub defaults: Result<Defaults, String>,
    /// Where the defaults come from.
    pub source: Option<String>,
}

/// Default component and image versions of a minor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Defaults {
    /// Component name to version (every required component but kubernetes).
    pub components: BTreeMap<String, Version>,
    /// Images the generated configs refer to.
    pub images: Images,
}

/// Image versions the generated configs refer to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Images {
    /// CoreDNS (without `v`).
    pub coredns: String,
    /// The pause (sandbox) image.
    pub pause: String,
}

/// A key into the pins table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinKey {
    /// The pin name (`kubelet`, `etcd`, `kubernetes-server`).
    pub pin: String,
    /// The architecture.
    pub arch: Arch,
    /// The version.
    pub version: Version,
}

impl std::fmt::Display for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.pin, self.arch, self.version)
    }
}

/// One artifact chosen to provide a binary at a version and arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactChoice {
    /// Index of the template in its component's `artifacts`.
    pub index: usize,
    /// The upstream URL.
    pub url: String,
    /// Upstream's checksum file, if it has one.
    pub checksum_url: Option<String>,
    /// Upstream's signature (a Sigstore bundle) and who must have signed, if it publishes one;
    /// for an unpinned artifact with detached signatures, the bundle `kbin update` stored in
    /// the overlay (its [`Detached::bundle_url`]), which install verifies offline.
    pub signature: Option<(String, crate::trust::Policy)>,
    /// Upstream's detached signature (`.sig` + `.cert`) and who must have signed, if it
    /// publishes one: what `kbin update` verifies through a Rekor lookup.
    pub detached: Option<(Detached, crate::trust::Policy)>,
    /// Upstream's OpenPGP detached signature (`.asc`) and the keyring it must verify against.
    pub asc: Option<(String, String)>,
    /// How it is packed.
    pub format: ArtifactFormat,
    /// For archives: the binary's path inside it.
    pub member: Option<String>,
    /// The pins-table key.
    pub pin_key: PinKey,
    /// The pinned digest, if the manifest has one.
    pub pinned: Option<Digest>,
    /// A trust-on-first-use digest from the overlay, when there is no pin.
    pub tofu: Option<Tofu>,
}

/// Fill `{version}`, `{arch}` and `{binary}` in a template.
pub fn expand(template: &str, version: &Version, arch: Arch, binary: &str) -> String {
    template
        .replace("{version}", &version.to_string())
        .replace("{arch}", arch.as_str())
        .replace("{binary}", binary)
}

impl Manifest {
    /// The embedded manifest. It is checked by the test suite, so failing here is a build defect.
    pub fn embedded() -> Result<Self, ManifestError> {
        Self::parse(EMBEDDED, Origin::Embedded)
    }

    /// Read and parse a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Origin::File(path.to_owned()))
    }

    /// Parse and validate manifest text.
    pub fn parse(text: &str, origin: Origin) -> Result<Self, ManifestError> {
        let syntax = |message: String| ManifestError::Syntax {
            origin: origin.to_string(),
            message: message.trim_end().to_owned(),
        };
        // Schema first, so that a manifest for another kbin gets the schema error rather than a
        // confusing complaint about some field it has or lacks.
        let table: toml::Table = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
        let found = match table.get("schema") {
            Some(toml::Value::Integer(n)) => *n,
            Some(_) => -1,
            None => 0,
        };
        if found != i64::from(SCHEMA) {
            return Err(ManifestError::Schema {
                origin: origin.to_string(),
                found,
            });
        }
        let raw: wire::Manifest = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
        let digest = Digest::sha256_of(&Sha256::digest(text.as_bytes()));
        raw.validate(origin, digest)
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Every component's name, comma-separated (for errors and hints).
    pub fn component_names(&self) -> String {
        self.components
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The component that provides `binary` (required or optional).
    pub fn component_of_binary(&self, binary: &str) -> Option<&Component> {
        self.components.iter().find(|c| {
            c.binaries.iter().any(|b| b == binary)
                || c.optional_binaries.iter().any(|b| b == binary)
        })
    }

    /// The newest minor that has defaults.
    pub fn latest_complete(&self) -> Option<&Release> {
        self.releases.values().rev().find(|r| r.defaults.is_ok())
    }

    /// The pinned digest of `pin` at `arch`/`version`, if any.
    pub fn pin(&self, pin: &str, arch: Arch, version: &Version) -> Option<&Digest> {
        self.pins.get(&PinKey {
            pin: pin.to_owned(),
            arch,
            version: version.clone(),
        })
    }

    /// Choose the artifact that provides `binary` of `component` at `version` for `arch`: the
    /// first template that is pinned there, else the first that provides the binary.
    pub fn artifact_for(
        &self,
        component: &Component,
        binary: &str,
        version: &Version,
        arch: Arch,
    ) -> Option<ArtifactChoice> {
        let candidates: Vec<ArtifactChoice> = component
            .artifacts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.binaries.iter().any(|b| b == binary))
            .map(|(index, a)| {
                let pin_key = PinKey {
                    pin: expand(&a.pin, version, arch, binary),
                    arch,
                    version: version.clone(),
                };
                let pinned = self.pins.get(&pin_key).cloned();
                let tofu = self.tofu.get(&pin_key).cloned();
                // A release's signer may name it (a workflow at the release's tag).
                let signer = component.signer.as_ref().map(|p| crate::trust::Policy {
                    identity: expand(&p.identity, version, arch, binary),
                    issuer: p.issuer.clone(),
                });
                let detached = a.detached.as_ref().and_then(|d| {
                    let d = Detached {
                        sig: expand(&d.sig, version, arch, binary),
                        cert: expand(&d.cert, version, arch, binary),
                    };
                    Some((d, signer.clone()?))
                });
                // A detached signature is checked at install only through the bundle `kbin
                // update` stored: a pinned artifact needs none (its pin vouches more), and
                // without a stored bundle there is no log entry to check it offline.
                let stored = detached.as_ref().filter(|_| {
                    pinned.is_none() && tofu.as_ref().is_some_and(|t| t.bundle.is_some())
                });
                let signature = a
                    .signature
                    .as_deref()
                    .filter(|_| a.signed_since.as_ref().is_none_or(|s| version >= s))
                    .and_then(|u| Some((expand(u, version, arch, binary), signer.clone()?)))
                    .or_else(|| stored.map(|(d, p)| (d.bundle_url(), p.clone())));
                ArtifactChoice {
                    index,
                    url: expand(&a.url, version, arch, binary),
                    checksum_url: a
                        .checksum_url
                        .as_deref()
                        .map(|u| expand(u, version, arch, binary)),
                    signature,
                    detached,
                    asc: a.asc.as_deref().and_then(|u| {
                        Some((expand(u, version, arch, binary), component.keyring.clone()?))
                    }),
                    format: a.format,
                    member: a
                        .layout
                        .as_deref()
                        .map(|l| expand(l, version, arch, binary)),
                    pinned,
                    tofu,
                    pin_key,
                }
            })
            .collect();
        candidates
            .iter()
            .find(|c| c.pinned.is_some())
            .or_else(|| candidates.iter().find(|c| c.tofu.is_some()))
            .or_else(|| candidates.first())
            .cloned()
    }

    /// Whether every required binary of `component` has a pinned artifact at `version`/`arch`.
    pub fn is_pinned(&self, component: &Component, version: &Version, arch: Arch) -> bool {
        component.binaries.iter().all(|b| {
            self.artifact_for(component, b, version, arch)
                .is_some_and(|c| c.pinned.is_some())
        })
    }
}

/// The serialized shape of toolchains.toml; private so that only validated data escapes.
mod wire {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Manifest {
        #[allow(dead_code)]
        schema: u32,
        #[serde(default)]
        component: Vec<Component>,
        #[serde(default)]
        rule: Vec<Rule>,
        #[serde(default)]
        release: BTreeMap<String, Release>,
        #[serde(default)]
        pins: BTreeMap<String, String>,
        images: Option<ImagesTable>,
    }

    /// `[images]`: who signs the container images.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ImagesTable {
        pub(super) signer: crate::trust::Policy,
    }

    /// Only the `[images]` table of a manifest (the built-in one's, for a manifest without it).
    #[derive(Deserialize)]
    pub(super) struct OnlyImages {
        pub(super) images: Option<ImagesTable>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Component {
        name: String,
        #[serde(default)]
        description: String,
        binaries: Vec<String>,
        #[serde(default)]
        optional_binaries: Vec<String>,
        #[serde(default)]
        install_dir: Option<String>,
        repository: String,
        tag: String,
        #[serde(default)]
        version_args: Vec<String>,
        #[serde(default)]
        version_args_override: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        artifact: Vec<Artifact>,
        recipe: Option<Recipe>,
        #[serde(default)]
        commits: BTreeMap<String, String>,
        #[serde(default)]
        ships: Vec<Ships>,
        releases: Option<Releases>,
        signer: Option<crate::trust::Policy>,
        keyring: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Releases {
        url: String,
        format: ListingFormat,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Ships {
        versions: String,
        binaries: Vec<String>,
        source: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Artifact {
        pin: String,
        url: String,
        checksum_url: Option<String>,
        signature: Option<String>,
        detached: Option<super::Detached>,
        signed_since: Option<String>,
        asc: Option<String>,
        format: ArtifactFormat,
        layout: Option<String>,
        #[serde(default)]
        binaries: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Recipe {
        command: Vec<String>,
        #[serde(default)]
        per_binary: bool,
        #[serde(default)]
        env: BTreeMap<String, String>,
        outputs: BTreeMap<String, String>,
        #[serde(default)]
        go_fix: Vec<GoFix>,
        #[serde(default)]
        release: Vec<ReleaseRow>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct ReleaseRow {
        versions: String,
        source: String,
        command: Option<Vec<String>>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        cgo: BTreeMap<String, bool>,
        #[serde(default)]
        needs: Vec<Need>,
        #[serde(default)]
        drop: Vec<Drop>,
        #[serde(default)]
        reports: Vec<Report>,
        go_version: Option<GoVersionFrom>,
        ldflags: Option<String>,
        #[serde(default)]
        flags: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct GoVersionFrom {
        file: String,
        prefix: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Need {
        tool: Option<String>,
        pkg_config: Option<String>,
        package: String,
        #[serde(rename = "for")]
        why: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Drop {
        tag: String,
        pkg_config: String,
        package: String,
        env: BTreeMap<String, String>,
        why: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Report {
        binary: String,
        args: Vec<String>,
        contains: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct GoFix {
        component_version: String,
        go: String,
        env: BTreeMap<String, String>,
        why: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Rule {
        component: String,
        kubernetes: String,
        requires: String,
        why: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Release {
        latest: String,
        patches: Vec<String>,
        source: Option<String>,
        defaults: Option<BTreeMap<String, String>>,
        images: Option<Images>,
        incomplete: Option<String>,
    }

    /// What every check needs: where the manifest came from, for the error.
    struct Check {
        origin: String,
    }

    impl Check {
        fn invalid(&self, problem: String) -> ManifestError {
            ManifestError::Invalid {
                origin: self.origin.clone(),
                problem,
            }
        }

        fn version(&self, what: &str, v: &str) -> Result<Version, ManifestError> {
            Version::parse(v.strip_prefix('v').unwrap_or(v))
                .map_err(|e| self.invalid(format!("{what}: {v:?} is not a version ({e})")))
        }

        fn req(&self, what: &str, v: &str) -> Result<VersionReq, ManifestError> {
            VersionReq::parse(v)
                .map_err(|e| self.invalid(format!("{what}: {v:?} is not a version range ({e})")))
        }
    }

    impl Manifest {
        /// Every section checked by the function of its own, each reference once: the
        /// components (their artifacts, recipe, commits and ships rows), then the skew rules,
        /// the releases and the pins, which refer to the components.
        pub(super) fn validate(
            self,
            origin: super::Origin,
            digest: Digest,
        ) -> Result<super::Manifest, ManifestError> {
            let ck = Check {
                origin: origin.to_string(),
            };
            let mut components: Vec<super::Component> = Vec::new();
            let mut owners: BTreeMap<String, String> = BTreeMap::new();
            for c in self.component {
                let c = component(&ck, c, &components, &mut owners)?;
                components.push(c);
            }
            for name in REQUIRED_COMPONENTS {
                if !components.iter().any(|c| c.name == *name) {
                    return Err(ck.invalid(format!(
                        "component {name:?} is missing: every manifest must define {}",
                        REQUIRED_COMPONENTS.join(", ")
                    )));
                }
            }
            let rules = self
                .rule
                .into_iter()
                .map(|r| rule(&ck, r, &components))
                .collect::<Result<Vec<_>, _>>()?;
            let mut releases = BTreeMap::new();
            for (key, r) in self.release {
                let r = release(&ck, &key, r, &components)?;
                releases.insert(r.minor, r);
            }
            if releases.is_empty() {
                return Err(ck.invalid("it lists no [release.\"1.NN\"]".into()));
            }
            let mut pins = BTreeMap::new();
            for (key, value) in self.pins {
                let (k, d) = pin(&ck, &key, &value)?;
                pins.insert(k, d);
            }
            let image_signer = match self.images {
                Some(i) => signer(&ck, "[images.signer]", i.signer)?,
                None => builtin_image_signer(),
            };
            Ok(super::Manifest {
                origin,
                digest,
                components,
                rules,
                releases,
                pins,
                tofu: BTreeMap::new(),
                learned: BTreeMap::new(),
                overlay: None,
                image_signer,
            })
        }
    }

    /// The built-in manifest's `[images.signer]`: what a manifest without it gets, so
    /// that leaving the table out never turns image signatures off.
    fn builtin_image_signer() -> crate::trust::Policy {
        toml::from_str::<OnlyImages>(super::EMBEDDED)
            .ok()
            .and_then(|m| m.images)
            .map(|i| i.signer)
            // The test suite parses the built-in manifest and checks its [images.signer].
            .expect("the built-in manifest has an [images.signer]")
    }

    /// A signer (`{ identity, issuer }`) as Fulcio certificates carry it: an identity (an email
    /// or a URI SAN) without spaces, and an issuer that is an https URL. Anything else could
    /// never match a certificate, and would make every signature look forged.
    fn signer(
        ck: &Check,
        what: &str,
        p: crate::trust::Policy,
    ) -> Result<crate::trust::Policy, ManifestError> {
        if p.identity.is_empty()
            || p.identity
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ck.invalid(format!(
                "{what}: identity {:?} is not a certificate identity (an email such as krel-trust@k8s-releng-prod.iam.gserviceaccount.com, or a URI)",
                p.identity
            )));
        }
        let https = url::Url::parse(&p.issuer)
            .is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some());
        if !https {
            return Err(ck.invalid(format!(
                "{what}: issuer {:?} is not an https URL (the OIDC issuer Fulcio records, such as https://accounts.google.com)",
                p.issuer
            )));
        }
        Ok(p)
    }

    /// One `[[component]]`: its names (unique, each binary owned once), artifacts, recipe,
    /// commits and ships rows.
    fn component(
        ck: &Check,
        c: Component,
        earlier: &[super::Component],
        owners: &mut BTreeMap<String, String>,
    ) -> Result<super::Component, ManifestError> {
        let what = format!("component {:?}", c.name);
        if c.name.is_empty() {
            return Err(ck.invalid("a component has an empty name".into()));
        }
        if earlier.iter().any(|x| x.name == c.name) {
            return Err(ck.invalid(format!("{what} is defined twice")));
        }
        if c.binaries.is_empty() {
            return Err(ck.invalid(format!("{what} lists no binaries")));
        }
        for b in c.binaries.iter().chain(&c.optional_binaries) {
            if b.is_empty() || b.contains('/') {
                return Err(ck.invalid(format!("{what}: {b:?} is not a binary name")));
            }
            if let Some(other) = owners.insert(b.clone(), c.name.clone()) {
                return Err(ck.invalid(format!(
                    "binary {b:?} is provided by both {other:?} and {:?}",
                    c.name
                )));
            }
        }
        if c.artifact.is_empty() {
            return Err(ck.invalid(format!("{what} has no [[component.artifact]]")));
        }
        if let Some(k) = &c.keyring
            && !crate::trust::openpgp::keyring_names().contains(&k.as_str())
        {
            return Err(ck.invalid(format!(
                "{what}: keyring {k:?} is not a keyring kbin has (it has: {})",
                crate::trust::openpgp::keyring_names().join(", ")
            )));
        }
        let mut artifacts = Vec::new();
        for a in c.artifact {
            if a.asc.is_some() && c.keyring.is_none() {
                return Err(ck.invalid(format!(
                    "{what}: artifact {:?} has an asc (OpenPGP signature) but the component names no keyring",
                    a.url
                )));
            }
            if (a.signature.is_some() || a.detached.is_some()) && c.signer.is_none() {
                return Err(ck.invalid(format!(
                    "{what}: artifact {:?} has a signature but the component has no [component.signer] (identity, issuer)",
                    a.url
                )));
            }
            if a.signature.is_some() && a.detached.is_some() {
                return Err(ck.invalid(format!(
                    "{what}: artifact {:?} has both a signature (bundle) and detached signatures: name one",
                    a.url
                )));
            }
            artifacts.push(artifact(ck, &what, &c.binaries, &c.optional_binaries, a)?);
        }
        let recipe = c.recipe.map(|r| recipe(ck, &what, r)).transpose()?;
        let commits = commits(ck, &what, &c.commits)?;
        let ships = ships(ck, &what, c.ships, &c.binaries, &c.optional_binaries)?;
        Ok(super::Component {
            name: c.name,
            description: c.description,
            binaries: c.binaries,
            optional_binaries: c.optional_binaries,
            install_dir: c.install_dir.unwrap_or_else(|| "bin".into()),
            repository: c.repository,
            tag: c.tag,
            version_args: c.version_args,
            version_args_override: c.version_args_override,
            artifacts,
            recipe,
            commits,
            ships,
            releases: c.releases.map(|r| Listing {
                url: r.url,
                format: r.format,
            }),
            signer: c
                .signer
                .map(|p| signer(ck, &format!("{what}: signer"), p))
                .transpose()?,
            keyring: c.keyring,
        })
    }

    /// A component's `commits`: each version's full commit id (40 lowercase hex).
    fn commits(
        ck: &Check,
        what: &str,
        raw: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<Version, String>, ManifestError> {
        let mut commits = BTreeMap::new();
        for (v, commit) in raw {
            let v = ck.version(&format!("{what}: commits"), v)?;
            if commit.len() != 40
                || !commit
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(ck.invalid(format!(
                    "{what}: commits: {commit:?} (for {v}) is not a full commit id (40 lowercase hex)"
                )));
            }
            commits.insert(v, commit.clone());
        }
        Ok(commits)
    }

    /// A component's ships rows: a source each, and only (and some of) its binaries.
    fn ships(
        ck: &Check,
        what: &str,
        raw: Vec<Ships>,
        binaries: &[String],
        optional_binaries: &[String],
    ) -> Result<Vec<super::Ships>, ManifestError> {
        let mut ships = Vec::new();
        for s in raw {
            let versions = ck.req(&format!("{what}: ships"), &s.versions)?;
            if s.source.trim().is_empty() {
                return Err(ck.invalid(format!(
                    "{what}: the ships row for {versions} has no source (say where upstream it was read)"
                )));
            }
            for b in &s.binaries {
                if !binaries.contains(b) && !optional_binaries.contains(b) {
                    return Err(ck.invalid(format!(
                        "{what}: the ships row for {versions} lists {b:?}, which is not one of the component's binaries or optional binaries"
                    )));
                }
            }
            if !binaries.iter().any(|b| s.binaries.contains(b)) {
                return Err(ck.invalid(format!(
                    "{what}: the ships row for {versions} lists none of the component's binaries"
                )));
            }
            ships.push(super::Ships {
                versions,
                binaries: s.binaries,
                source: s.source,
            });
        }
        Ok(ships)
    }

    /// One `[[component.artifact]]`: http(s):// or file:// URLs, a layout for a tar.gz, and only
    /// the component's binaries.
    fn artifact(
        ck: &Check,
        what: &str,
        c_binaries: &[String],
        c_optional: &[String],
        a: Artifact,
    ) -> Result<ArtifactTemplate, ManifestError> {
        for (field, t) in [
            ("url", Some(&a.url)),
            ("checksum-url", a.checksum_url.as_ref()),
            ("signature", a.signature.as_ref()),
            ("detached sig", a.detached.as_ref().map(|d| &d.sig)),
            ("detached cert", a.detached.as_ref().map(|d| &d.cert)),
            ("asc", a.asc.as_ref()),
        ] {
            if let Some(t) = t
                && !(t.starts_with("https://")
                    || t.starts_with("http://")
                    || t.starts_with("file://"))
            {
                return Err(ck.invalid(format!(
                    "{what}: artifact {field} {t:?} is not an http(s):// or file:// URL"
                )));
            }
        }
        let signed_since = match &a.signed_since {
            None => None,
            Some(_) if a.signature.is_none() && a.detached.is_none() => {
                return Err(ck.invalid(format!(
                    "{what}: artifact {:?} has signed-since but no signature to ask for",
                    a.url
                )));
            }
            Some(v) => Some(Version::parse(v).map_err(|e| {
                ck.invalid(format!(
                    "{what}: artifact {:?} has signed-since {v:?}, which is not a version ({e})",
                    a.url
                ))
            })?),
        };
        if a.format == ArtifactFormat::TarGz && a.layout.is_none() {
            return Err(ck.invalid(format!(
                "{what}: the tar.gz artifact {:?} needs a layout (where each binary is inside it)",
                a.url
            )));
        }
        let binaries = if a.binaries.is_empty() {
            c_binaries.iter().chain(c_optional).cloned().collect()
        } else {
            for b in &a.binaries {
                if !c_binaries.contains(b) && !c_optional.contains(b) {
                    return Err(ck.invalid(format!(
                        "{what}: artifact {:?} provides {b:?}, which is not one of the component's binaries",
                        a.url
                    )));
                }
            }
            a.binaries
        };
        Ok(ArtifactTemplate {
            pin: a.pin,
            url: a.url,
            checksum_url: a.checksum_url,
            signature: a.signature,
            detached: a.detached,
            signed_since,
            asc: a.asc,
            format: a.format,
            layout: a.layout,
            binaries,
        })
    }

    /// A component's `[component.recipe]`, with its go-fix and release rows.
    fn recipe(ck: &Check, what: &str, r: Recipe) -> Result<super::Recipe, ManifestError> {
        if r.command.is_empty() {
            return Err(ck.invalid(format!("{what}: the recipe's command is empty")));
        }
        let mut go_fixes = Vec::new();
        for f in r.go_fix {
            go_fixes.push(super::GoFix {
                component_version: ck.req(what, &f.component_version)?,
                go: ck.req(what, &f.go)?,
                env: f.env,
                why: f.why,
            });
        }
        let releases = r
            .release
            .into_iter()
            .map(|row| release_build(ck, what, row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::Recipe {
            command: r.command,
            per_binary: r.per_binary,
            env: r.env,
            outputs: r.outputs,
            go_fixes,
            releases,
        })
    }

    /// One `[[component.recipe.release]]`: its versions, needs (a tool or a pkg-config module
    /// each), droppable tags and self-reports.
    fn release_build(
        ck: &Check,
        what: &str,
        row: ReleaseRow,
    ) -> Result<super::ReleaseBuild, ManifestError> {
        let versions = ck.req(what, &row.versions)?;
        let mut needs = Vec::new();
        for n in row.needs {
            let kind = match (n.tool, n.pkg_config) {
                (Some(t), None) => super::NeedKind::Tool(t),
                (None, Some(m)) => super::NeedKind::PkgConfig(m),
                _ => {
                    return Err(ck.invalid(format!(
                        "{what}: a release need names exactly one of tool and pkg-config (for {:?})",
                        n.why
                    )));
                }
            };
            needs.push(super::Need {
                what: kind,
                package: n.package,
                why: n.why,
            });
        }
        if row.command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(ck.invalid(format!(
                "{what}: the release row for {versions} has an empty command"
            )));
        }
        Ok(super::ReleaseBuild {
            versions,
            source: row.source,
            command: row.command,
            tags: row.tags,
            cgo: row.cgo,
            needs,
            drops: row
                .drop
                .into_iter()
                .map(|d| super::TagDrop {
                    tag: d.tag,
                    pkg_config: d.pkg_config,
                    package: d.package,
                    env: d.env,
                    why: d.why,
                })
                .collect(),
            reports: row
                .reports
                .into_iter()
                .map(|r| super::SelfReport {
                    binary: r.binary,
                    args: r.args,
                    contains: r.contains,
                })
                .collect(),
            go_version: row
                .go_version
                .map(|g| super::GoVersionSource {
                    file: g.file,
                    prefix: g.prefix,
                })
                .unwrap_or_default(),
            ldflags: row.ldflags,
            flags: row.flags,
        })
    }

    /// One `[[rule]]`: a known component and version ranges that parse.
    fn rule(
        ck: &Check,
        r: Rule,
        components: &[super::Component],
    ) -> Result<SkewRule, ManifestError> {
        let known = |name: &str| components.iter().any(|c| c.name == name);
        if !known(&r.component) {
            return Err(ck.invalid(format!(
                "a [[rule]] names component {:?}, which the manifest does not define",
                r.component
            )));
        }
        let rule = SkewRule {
            kubernetes: ck.req(&format!("rule for {}", r.component), &r.kubernetes)?,
            component: r.component,
            requires: r.requires,
            why: r.why,
        };
        rule.requirement(&Version::new(1, 0, 0)).map_err(|e| {
            ck.invalid(format!(
                "rule for {}: requires {:?} is not a version range ({e})",
                rule.component, rule.requires
            ))
        })?;
        Ok(rule)
    }

    /// One `[release."1.NN"]`: its patches (of that minor; latest the newest), and either
    /// defaults for every component and images, or why it is incomplete.
    fn release(
        ck: &Check,
        key: &str,
        r: Release,
        components: &[super::Component],
    ) -> Result<super::Release, ManifestError> {
        let known = |name: &str| components.iter().any(|c| c.name == name);
        let minor: Minor = key
            .parse()
            .map_err(|e| ck.invalid(format!("[release.{key:?}]: {e}")))?;
        let what = format!("[release.\"{minor}\"]");
        let latest = ck.version(&what, &r.latest)?;
        let mut patches = Vec::new();
        for p in &r.patches {
            let p = ck.version(&what, p)?;
            if Minor::of(&p) != minor {
                return Err(ck.invalid(format!("{what}: patch {p} is not a {minor} release")));
            }
            patches.push(p);
        }
        patches.sort();
        patches.dedup();
        if !patches.contains(&latest) {
            return Err(ck.invalid(format!("{what}: latest {latest} is not among its patches")));
        }
        if patches.last() != Some(&latest) {
            return Err(ck.invalid(format!("{what}: latest {latest} is not its newest patch")));
        }
        let defaults = match (r.defaults, r.images, r.incomplete) {
            (_, _, Some(why)) => Err(why),
            (Some(d), Some(images), None) => {
                let mut map = BTreeMap::new();
                for (name, v) in d {
                    if !known(&name) || name == KUBERNETES {
                        return Err(ck.invalid(format!(
                            "{what}: defaults name {name:?}, which is not a component other than kubernetes"
                        )));
                    }
                    map.insert(name.clone(), ck.version(&format!("{what} {name}"), &v)?);
                }
                for c in components {
                    if c.name != KUBERNETES && !map.contains_key(&c.name) {
                        return Err(ck.invalid(format!(
                            "{what} has no default version for component {:?}: add `{} = \"X.Y.Z\"` to its defaults, or mark the minor `incomplete = \"why\"`",
                            c.name, c.name
                        )));
                    }
                }
                Ok(Defaults {
                    components: map,
                    images,
                })
            }
            (None, _, None) => {
                return Err(ck.invalid(format!(
                    "{what} has no defaults: add a defaults table, or mark it `incomplete = \"why\"`"
                )));
            }
            (Some(_), None, None) => {
                return Err(
                    ck.invalid(format!("{what} has no images (coredns and pause versions)"))
                );
            }
        };
        Ok(super::Release {
            minor,
            latest,
            patches,
            defaults,
            source: r.source,
        })
    }

    /// One `[pins]` entry: `"<pin>/<arch>/<version>" = "<digest>"`.
    fn pin(ck: &Check, key: &str, value: &str) -> Result<(PinKey, Digest), ManifestError> {
        let mut parts = key.splitn(3, '/');
        let (Some(pin), Some(arch), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ck.invalid(format!("pin {key:?} is not \"<pin>/<arch>/<version>\"")));
        };
        let arch: Arch = arch
            .parse()
            .map_err(|e| ck.invalid(format!("pin {key:?}: {e}")))?;
        let digest: Digest = value
            .parse()
            .map_err(|e| ck.invalid(format!("pin {key:?}: {e}")))?;
        Ok((
            PinKey {
                pin: pin.to_owned(),
                arch,
                version: ck.version(&format!("pin {key:?}"), v)?,
            },
            digest,
        ))
    }
}

#[cfg(test)]
mod tests;
