//! The overlay manifest: what `kbin update` learned from upstream since this kbin was built,
//! kept in `$KBIN_HOME/manifest-overlay.toml` and merged over the built-in (or `--manifest`)
//! manifest by every command. The built-in manifest is never edited.
//!
//! ```toml
//! schema = 1
//! updated = "2026-12-01T18:00:00Z"
//!
//! # New Kubernetes patches per known minor: the minor's `latest` moves to the newest.
//! [patches]
//! "1.30" = ["1.30.15"]
//!
//! # New releases of other components (installable with --with; defaults do not change).
//! [versions]
//! etcd = ["3.5.22"]
//!
//! # Trust on first use: digests read from upstream's checksum files over TLS, with where and
//! # when. Distinct from the manifest's [pins]: --require-pinned refuses them.
//! [tofu."kubelet/amd64/1.30.15"]
//! digest = "sha256:…"
//! source = "https://dl.k8s.io/release/v1.30.15/bin/linux/amd64/kubelet.sha256"
//! fetched = "2026-12-01T18:00:00Z"
//! # when upstream signs it, and its signature verified against that digest:
//! signed = { identity = "krel-staging@k8s-releng-prod.iam.gserviceaccount.com", issuer = "https://accounts.google.com" }
//! # for an artifact with detached signatures (`.sig` + `.cert`, no log entry beside them): the
//! # bundle `kbin update` made from them and the Rekor entry it looked up, so that an install,
//! # air-gapped or not, verifies it offline (cosign's `--bundle` JSON shape)
//! bundle = "{\"base64Signature\": …, \"cert\": …, \"rekorBundle\": …}"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Digest, Manifest, ManifestError, Minor, PinKey};

/// The overlay schema this kbin reads and writes.
pub const OVERLAY_SCHEMA: u32 = 1;

/// A digest learned by trust on first use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tofu {
    /// The digest upstream's checksum file gave.
    pub digest: Digest,
    /// The checksum file's upstream URL.
    pub source: String,
    /// When it was read (RFC 3339, UTC).
    pub fetched: String,
    /// Set when upstream's signature of the artifact was verified against this digest (offline,
    /// against the compiled-in trust root) by `kbin update`: who signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::trust::Policy>,
    /// For an artifact with detached signatures (`detached = { sig, cert }`): the bundle
    /// `kbin update` made of them and the Rekor entry it looked up and verified, kept so an
    /// install verifies it offline (no Rekor, no `.sig`/`.cert` request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
}

/// The overlay file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// [`OVERLAY_SCHEMA`].
    pub schema: u32,
    /// When `kbin update` last changed it.
    pub updated: String,
    /// New Kubernetes patches, by minor (`"1.30"`).
    #[serde(default)]
    pub patches: BTreeMap<String, Vec<String>>,
    /// New versions of other components, by component.
    #[serde(default)]
    pub versions: BTreeMap<String, Vec<String>>,
    /// Trust-on-first-use digests, keyed like the manifest's pins (`<pin>/<arch>/<version>`).
    #[serde(default)]
    pub tofu: BTreeMap<String, Tofu>,
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            schema: OVERLAY_SCHEMA,
            updated: String::new(),
            patches: BTreeMap::new(),
            versions: BTreeMap::new(),
            tofu: BTreeMap::new(),
        }
    }
}

impl Overlay {
    /// Read the overlay at `path`; none there is an empty overlay.
    pub fn load(path: &Path) -> Result<Overlay, ManifestError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Overlay::default()),
            Err(source) => {
                return Err(ManifestError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let o: Overlay = toml::from_str(&text).map_err(|e| ManifestError::Syntax {
            origin: path.display().to_string(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if o.schema != OVERLAY_SCHEMA {
            return Err(ManifestError::Schema {
                origin: path.display().to_string(),
                found: i64::from(o.schema),
            });
        }
        Ok(o)
    }

    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty() && self.versions.is_empty() && self.tofu.is_empty()
    }

    /// The TOML text kbin writes (stable order).
    pub fn to_toml(&self) -> String {
        let mut s = String::from(
            "# Written by `kbin update`: what upstream published after this kbin was built.\n\
             # Merged over the built-in manifest; [tofu] digests are trust on first use.\n",
        );
        s.push_str(&toml::to_string(self).expect("an overlay always serializes"));
        s
    }
}

impl Manifest {
    /// This manifest with `overlay` merged in (from `path`, for messages): new patches join
    /// their minor (whose `latest` moves), new component versions are listed, TOFU digests
    /// are kept apart from the pins. The digest covers both.
    pub fn with_overlay(mut self, overlay: &Overlay, path: &Path) -> Result<Self, ManifestError> {
        if overlay.is_empty() {
            return Ok(self);
        }
        let invalid = |problem: String| ManifestError::Invalid {
            origin: path.display().to_string(),
            problem,
        };
        let version = |v: &str| {
            Version::parse(v).map_err(|e| invalid(format!("{v:?} is not a version ({e})")))
        };
        for (minor, patches) in &overlay.patches {
            let m: Minor = minor
                .parse()
                .map_err(|e| invalid(format!("[patches] {minor:?}: {e}")))?;
            let Some(r) = self.releases.get_mut(&m) else {
                continue;
            };
            for p in patches {
                let p = version(p)?;
                if Minor::of(&p) != m {
                    return Err(invalid(format!("[patches] {p} is not a {m} release")));
                }
                if !r.patches.contains(&p) {
                    r.patches.push(p);
                }
            }
            r.patches.sort();
            if let Some(last) = r.patches.last() {
                r.latest = last.clone();
            }
        }
        for (component, versions) in &overlay.versions {
            if self.component(component).is_none() {
                return Err(invalid(format!(
                    "[versions] names {component:?}, which the manifest does not define"
                )));
            }
            let list = self.learned.entry(component.clone()).or_default();
            for v in versions {
                let v = version(v)?;
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            list.sort();
        }
        for (key, t) in &overlay.tofu {
            let mut parts = key.splitn(3, '/');
            let (Some(pin), Some(arch), Some(v)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid(format!(
                    "[tofu] {key:?} is not \"<pin>/<arch>/<version>\""
                )));
            };
            let arch = arch
                .parse()
                .map_err(|e| invalid(format!("[tofu] {key:?}: {e}")))?;
            self.tofu.insert(
                PinKey {
                    pin: pin.to_owned(),
                    arch,
                    version: version(v)?,
                },
                t.clone(),
            );
        }
        let mut h = Sha256::new();
        h.update(self.digest.to_string().as_bytes());
        h.update(overlay.to_toml().as_bytes());
        self.digest = Digest::sha256_of(&h.finalize());
        self.overlay = Some(path.to_owned());
        Ok(self)
    }
}
