//! Container images (the pause and CoreDNS images a release names): pulled from their registry
//! with the two GETs of the OCI distribution API that a pull needs (`/v2/<repo>/manifests/<ref>`
//! and `/v2/<repo>/blobs/<digest>`), each blob verified against the digest the manifest gives
//! it, and kept in the content-addressed store as one OCI image-layout archive per image and
//! architecture: the file `ctr -n k8s.io images import` reads on a node.
//!
//! Why not a registry client crate: a pull of a public image is two kinds of GET and a JSON
//! walk; doing it over [`Fetcher`] gives it the same mirrors, proxies, CA bundle, retries,
//! resumes and hashing-while-streaming as every other download, and a registry laid out as
//! static files (`kbin mirror export`, `file://`) works unchanged. Anonymous pulls only: the
//! images kbin needs are public.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fetch::{FetchError, Fetcher, NoProgress};
use crate::manifest::{Arch, Digest, DigestAlgo};
use crate::store::cas::{CasError, Store};

/// The media types a pull accepts for a tag: an index (multi-arch) or a single manifest, OCI or
/// Docker's.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Errors pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference is not `registry/repository:tag`.
    #[error("{0:?} is not an image reference (registry/repository:tag)")]
    BadReference(String),
    /// A download failed (or a blob did not match its digest).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The store could not take a blob.
    #[error(transparent)]
    Store(#[from] CasError),
    /// A manifest is not what the distribution spec says.
    #[error("{image}: {what}")]
    Manifest {
        /// The image.
        image: String,
        /// What is wrong.
        what: String,
    },
    /// A manifest fetched by digest has another digest.
    #[error("{image}: the manifest {expected} came back with digest {actual}")]
    ManifestDigest {
        /// The image.
        image: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what came.
        actual: Digest,
    },
    /// The index has no manifest for the architecture.
    #[error("{image} has no linux/{arch} image (it has: {has})")]
    NoPlatform {
        /// The image.
        image: String,
        /// The architecture asked for.
        arch: Arch,
        /// The platforms it has.
        has: String,
    },
    /// An I/O error writing the archive.
    #[error(transparent)]
    Io(#[from] crate::fsx::PathIo),
    /// The store lacks a blob an exported image needs.
    #[error("{image}: the store lacks its blob {digest} (install or pull it again)")]
    MissingBlob {
        /// The image.
        image: String,
        /// The blob.
        digest: Digest,
    },
    /// `--require-verified`, and the registry serves no signature for the image.
    #[error("{0}: the registry serves no cosign signature for it (--require-verified)")]
    Unsigned(String),
    /// The registry serves a cosign signature for the image, and it was refused: nothing of the
    /// image is kept.
    #[error("{image}: its cosign signature was refused (nothing kept)")]
    Signature {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: crate::trust::SigError,
    },
}

/// `registry/repository:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (`registry.k8s.io`).
    pub registry: String,
    /// The repository (`pause`, `coredns/coredns`).
    pub repository: String,
    /// The tag (`3.10.1`, `v1.12.4`).
    pub tag: String,
}

impl std::str::FromStr for ImageRef {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, ImageError> {
        let bad = || ImageError::BadReference(s.to_owned());
        let (registry, rest) = s.split_once('/').ok_or_else(bad)?;
        let (repository, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        };
        if !registry.contains('.') && !registry.contains(':') && registry != "localhost"
            || !ok_part(repository)
            || repository.split('/').any(str::is_empty)
            || !ok_part(tag)
            || tag.contains('/')
        {
            return Err(bad());
        }
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

impl ImageRef {
    /// The pause image of version `v` (`registry.k8s.io/pause:3.10.1`).
    pub fn pause(v: &str) -> ImageRef {
        ImageRef {
            registry: "registry.k8s.io".into(),
            repository: "pause".into(),
            tag: v.to_owned(),
        }
    }

    /// The CoreDNS image of version `v` (`registry.k8s.io/coredns/coredns:v1.12.4`).
    pub fn coredns(v: &str) -> ImageRef {
        ImageRef {
            registry: "registry.k8s.io".into(),
            repository: "coredns/coredns".into(),
            tag: format!("v{}", v.trim_start_matches('v')),
        }
    }

    /// The upstream URL of a manifest (`reference`: a tag or a digest) or a blob.
    pub fn url(&self, kind: &str, reference: &str) -> String {
        format!(
            "https://{}/v2/{}/{kind}/{reference}",
            self.registry, self.repository
        )
    }

    /// A file name for its archive: `pause-3.10.1.tar`, `coredns-v1.12.4.tar`.
    pub fn archive_name(&self) -> String {
        let base = self.repository.rsplit('/').next().unwrap_or("image");
        format!("{base}-{}.tar", self.tag)
    }
}

/// A pulled image, as the toolchain lock records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledImage {
    /// `registry.k8s.io/pause:3.10.1`.
    pub name: String,
    /// The architecture.
    pub arch: Arch,
    /// The digest the tag pointed at when pulled (an index or a manifest): trusted on first
    /// use over TLS, as no kbin release pins image digests yet.
    pub digest: Digest,
    /// The platform manifest's digest (what containerd names the image by).
    pub manifest: Digest,
    /// The OCI image-layout archive in the store.
    pub archive: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Where it came from (the tag's manifest URL, after mirrors).
    pub source: String,
    /// When (RFC 3339).
    pub fetched: String,
    /// Set when the registry served a cosign signature for `digest` and it verified (offline,
    /// against the compiled-in trust root): who signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::trust::Policy>,
    /// The signature that verified, kept in the store so `kbin mirror export` serves it where a
    /// registry does and a pull through the mirror verifies it as one from the registry. With
    /// it the store also keeps the tag's document (the blob `digest`, the index the signature
    /// names), so the export's tag has the very digest that was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<KeptSignature>,
}

/// A verified cosign signature's material, as blobs in the store (each checked against its
/// digest before use, like any blob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSignature {
    /// The signature manifest (the tag `sha256-<hex>.sig`); its layers' annotations hold the
    /// signature, the certificate and the Rekor bundle.
    pub manifest: Digest,
    /// The simple-signing payloads of its layers that a pull reads, in the manifest's order.
    pub payloads: Vec<Digest>,
}

impl PulledImage {
    /// The store blobs its kept signature is made of: the tag's document, the signature
    /// manifest and its payloads (none when it has no kept signature). Receipts keep them from
    /// `cache gc`.
    pub fn signature_blobs(&self) -> Vec<&Digest> {
        match &self.signature {
            None => Vec::new(),
            Some(k) => std::iter::once(&self.digest)
                .chain(std::iter::once(&k.manifest))
                .chain(&k.payloads)
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    media_type: Option<String>,
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pull `image` for `arch` into `store` (blobs it has already are not fetched again), and
/// write its OCI image-layout archive there. A signature the registry serves must verify as
/// `signer`'s. Nothing is kept of a blob whose digest is wrong.
pub async fn pull(
    fetcher: &Fetcher,
    store: &Store,
    image: &ImageRef,
    arch: Arch,
    signer: &crate::trust::Policy,
) -> Result<PulledImage, ImageError> {
    pull_checked(fetcher, store, image, arch, signer, false).await
}

/// [`pull`], refusing an image without a verified signature when `require_signed` (before any
/// layer is fetched).
pub async fn pull_checked(
    fetcher: &Fetcher,
    store: &Store,
    image: &ImageRef,
    arch: Arch,
    signer: &crate::trust::Policy,
    require_signed: bool,
) -> Result<PulledImage, ImageError> {
    let name = image.to_string();
    // Pulled before, and its archive still in the store: the tag is not asked again (trust on
    // first use; `kbin update` is where newer digests are looked for).
    let record = store.layout().image_record(&name, &arch.to_string());
    let intact = |d: &Digest| matches!(store.check(d), Ok(crate::store::Checked::Intact(_)));
    if let Some(p) = std::fs::read_to_string(&record)
        .ok()
        .and_then(|t| toml::from_str::<PulledImage>(&t).ok())
        // Checked, not just found: a damaged archive is removed by the check and pulled again.
        // A signed one is reused only if signed by whom this manifest names and its kept
        // signature is whole (a record from before signatures were kept, or one whose blobs
        // `cache gc` took, is pulled again so that an export can carry the signature).
        .filter(|p| {
            p.name == name
                && p.arch == arch
                && intact(&p.archive)
                && p.signed.as_ref().is_none_or(|s| {
                    s == signer
                        && p.signature.is_some()
                        && p.signature_blobs().into_iter().all(intact)
                })
        })
    {
        if require_signed && p.signed.is_none() {
            return Err(ImageError::Unsigned(name));
        }
        return Ok(p);
    }
    let tag_url = image.url("manifests", &image.tag);
    let m = resolve_manifest(fetcher, image, arch, &tag_url).await?;
    // Before any layer is fetched: a refused signature keeps nothing.
    let verified = cosign_signature(fetcher, image, &m.top_digest, signer).await?;
    if require_signed && verified.is_none() {
        return Err(ImageError::Unsigned(name));
    }
    let bad = |what: String| ImageError::Manifest {
        image: name.clone(),
        what,
    };
    let manifest: Document = serde_json::from_slice(&m.bytes)
        .map_err(|e| bad(format!("its image manifest is not JSON: {e}")))?;
    let config = manifest
        .config
        .ok_or_else(|| bad("its image manifest has no config".into()))?;
    let layers = manifest
        .layers
        .ok_or_else(|| bad("its image manifest has no layers".into()))?;
    let blobs = fetch_blobs(
        fetcher,
        store,
        image,
        std::iter::once(&config).chain(&layers),
    )
    .await?;
    let (archive, size) = write_archive(store, image, arch, &m, &blobs)?;
    // The layers are in the archive now.
    drop(blobs);
    let (signed, signature) = match verified {
        Some(v) => {
            let kept = keep_signature(store, &m, &v)?;
            (Some(v.signer), Some(kept))
        }
        None => (None, None),
    };
    let source = fetcher
        .resolve_url(&tag_url)
        .map(|u| u.to_string())
        .unwrap_or(tag_url);
    let pulled = PulledImage {
        name,
        arch,
        digest: m.top_digest,
        manifest: m.digest,
        archive,
        size,
        source,
        fetched: crate::util::now_rfc3339(),
        signed,
        signature,
    };
    let text = toml::to_string(&pulled).expect("strings and digests serialize");
    crate::fsx::write_atomic(&record, text.as_bytes(), 0o644)?;
    Ok(pulled)
}

/// The annotations cosign puts on a signature layer.
const COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const COSIGN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const COSIGN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigLayer {
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct SigManifest {
    layers: Vec<SigLayer>,
}

/// A cosign signature that verified: who signed, and the bytes it was read from.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    /// Who signed (the certificate's identity and issuer).
    pub signer: crate::trust::Policy,
    /// The signature manifest, as served.
    pub manifest: Vec<u8>,
    /// The payloads of its layers that were read, in order, each with its digest.
    pub payloads: Vec<(Digest, Vec<u8>)>,
}

/// The signature tag of the image whose tag names `digest`: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algo().as_str(), digest.hex())
}

/// The cosign signature of the image whose tag names `digest` (`<repo>:sha256-<hex>.sig`), if
/// the registry serves one: each signature layer's simple-signing payload must name `digest`,
/// and one of them must verify as `policy`'s keyless signature (certificate and Rekor bundle
/// from its annotations). None when the registry has no signature; an error when it has one
/// that does not verify.
pub async fn cosign_signature(
    fetcher: &Fetcher,
    image: &ImageRef,
    digest: &Digest,
    policy: &crate::trust::Policy,
) -> Result<Option<VerifiedSignature>, ImageError> {
    let name = image.to_string();
    let refused = |source: crate::trust::SigError| ImageError::Signature {
        image: name.clone(),
        source,
    };
    let sig_tag = signature_tag(digest);
    let doc = match fetcher
        .document(&image.url("manifests", &sig_tag), OCI_MANIFEST)
        .await
    {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let m: SigManifest = serde_json::from_slice(&doc).map_err(|e| {
        refused(crate::trust::SigError::Malformed(format!(
            "the signature manifest {sig_tag} is not JSON: {e}"
        )))
    })?;
    let root = crate::trust::TrustRoot::active().map_err(&refused)?;
    let mut last = None;
    // Every payload read, in order: a pull through an export reads the same ones.
    let mut payloads: Vec<(Digest, Vec<u8>)> = Vec::new();
    for layer in &m.layers {
        let (Some(sig), Some(cert)) = (
            layer.annotations.get(COSIGN_SIGNATURE),
            layer.annotations.get(COSIGN_CERTIFICATE),
        ) else {
            continue;
        };
        let payload_digest = parse_digest(&layer.digest).map_err(|e| {
            refused(crate::trust::SigError::Malformed(format!(
                "a signature layer's digest: {e}"
            )))
        })?;
        let payload = fetcher
            .document(&image.url("blobs", &layer.digest), "*/*")
            .await?;
        if sha256(&payload) != payload_digest {
            return Err(refused(crate::trust::SigError::Malformed(format!(
                "the signature payload {payload_digest} came back with another digest"
            ))));
        }
        payloads.push((payload_digest.clone(), payload.clone()));
        // The simple-signing payload names the image's digest: a signature of another image
        // does not vouch for this one.
        if let Some(other) = names_other_image(&payload, digest) {
            last = Some(other);
            continue;
        }
        let material = layer_material(layer, sig, cert).map_err(&refused)?;
        let raw = hex::decode(payload_digest.hex()).expect("a parsed sha256 is hex");
        match crate::trust::verify_blob(&root, &material, &raw, policy) {
            Ok(s) => {
                return Ok(Some(VerifiedSignature {
                    signer: crate::trust::Policy {
                        identity: s.identity,
                        issuer: s.issuer,
                    },
                    manifest: doc,
                    payloads,
                }));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(refused(last.unwrap_or_else(|| {
        crate::trust::SigError::Malformed(format!(
            "the signature manifest {sig_tag} has no signature layer"
        ))
    })))
}

/// Why a signature layer's simple-signing `payload` does not vouch for the image `digest`: it
/// names another image (or none).
fn names_other_image(payload: &[u8], digest: &Digest) -> Option<crate::trust::SigError> {
    let named = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v["critical"]["image"]["docker-manifest-digest"]
                .as_str()
                .map(str::to_owned)
        });
    (named.as_deref() != Some(digest.to_string().as_str())).then(|| {
        crate::trust::SigError::EntryMismatch(format!(
            "the signed payload names {}, not {digest}",
            named.as_deref().unwrap_or("no image")
        ))
    })
}

/// A signature layer's signature, certificate and Rekor bundle (its annotations) as the
/// material to verify: cosign's `--bundle` shape.
fn layer_material(
    layer: &SigLayer,
    sig: &str,
    cert: &str,
) -> Result<crate::trust::Material, crate::trust::SigError> {
    use base64::Engine as _;
    let mut bundle = serde_json::json!({
        "base64Signature": sig,
        "cert": base64::engine::general_purpose::STANDARD.encode(cert.as_bytes()),
    });
    if let Some(b) = layer.annotations.get(COSIGN_BUNDLE) {
        bundle["rekorBundle"] = serde_json::from_str(b).map_err(|e| {
            crate::trust::SigError::Malformed(format!(
                "the {COSIGN_BUNDLE} annotation is not JSON: {e}"
            ))
        })?;
    }
    crate::trust::Material::from_bundle(bundle.to_string().as_bytes())
}

/// Keep a verified signature's material in the store, each blob checked against its digest: the
/// tag's document (what the signature names), the signature manifest and the payloads read.
fn keep_signature(
    store: &Store,
    m: &ImageManifest,
    v: &VerifiedSignature,
) -> Result<KeptSignature, ImageError> {
    insert_bytes(store, &m.top, &m.top_digest)?;
    let manifest = insert_bytes(store, &v.manifest, &sha256(&v.manifest))?;
    let payloads = v
        .payloads
        .iter()
        .map(|(d, bytes)| insert_bytes(store, bytes, d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(KeptSignature { manifest, payloads })
}

/// `bytes` into the store as a blob, refused unless its sha256 is `digest`.
fn insert_bytes(store: &Store, bytes: &[u8], digest: &Digest) -> Result<Digest, ImageError> {
    let tmp = store.temp_file()?;
    let tmp_path = tmp.path().to_owned();
    let io = |e| crate::fsx::at::<ImageError>("cannot write", &tmp_path)(e);
    let mut f = tmp.as_file();
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    let (_, path) = tmp
        .keep()
        .map_err(|e| crate::fsx::at::<ImageError>("cannot keep", &tmp_path)(e.error))?;
    Ok(store.insert_file(&path, Some(digest))?)
}

/// The image manifest for one platform, as the tag led to it.
struct ImageManifest {
    /// The digest of what the tag names (an index, or the manifest itself).
    top_digest: Digest,
    /// What the tag names, as served.
    top: Vec<u8>,
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
}

/// Ask the tag, and when it names an index, the manifest of `arch`'s linux platform, checked
/// against the digest and size the index gives it.
async fn resolve_manifest(
    fetcher: &Fetcher,
    image: &ImageRef,
    arch: Arch,
    tag_url: &str,
) -> Result<ImageManifest, ImageError> {
    let name = image.to_string();
    let bad = |what: String| ImageError::Manifest {
        image: name.clone(),
        what,
    };
    let top = fetcher.document(tag_url, ACCEPT).await?;
    let top_digest = sha256(&top);
    let doc: Document =
        serde_json::from_slice(&top).map_err(|e| bad(format!("its manifest is not JSON: {e}")))?;
    let Some(list) = doc.manifests else {
        let media_type = doc.media_type.unwrap_or_else(|| OCI_MANIFEST.into());
        return Ok(ImageManifest {
            digest: top_digest.clone(),
            top_digest,
            top: top.clone(),
            bytes: top,
            media_type,
        });
    };
    let want = arch.to_string();
    let pick = list
        .iter()
        .find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == "linux"
                    && p.architecture == want
                    && (arch != Arch::Arm64 || p.variant.as_deref().is_none_or(|v| v == "v8"))
            })
        })
        .ok_or_else(|| ImageError::NoPlatform {
            image: name.clone(),
            arch,
            has: list
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let expected = parse_digest(&pick.digest).map_err(bad)?;
    let bytes = fetcher
        .document(&image.url("manifests", &pick.digest), ACCEPT)
        .await?;
    let actual = sha256(&bytes);
    if actual != expected || bytes.len() as u64 != pick.size {
        return Err(ImageError::ManifestDigest {
            image: name,
            expected,
            actual,
        });
    }
    Ok(ImageManifest {
        top_digest,
        top,
        bytes,
        digest: expected,
        media_type: pick
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_MANIFEST.into()),
    })
}

/// A blob downloaded beside the store, removed (and its lock released) when dropped.
struct Blob {
    digest: Digest,
    path: PathBuf,
    _partial: tempfile::TempPath,
    _lock: crate::store::cas::FileLock,
}

/// Every blob, verified by the digest its manifest gives it, downloaded beside the store
/// (resumable) to be packed into the archive: the store keeps the archive only, so `cache gc`
/// has no loose layers to keep or lose.
async fn fetch_blobs(
    fetcher: &Fetcher,
    store: &Store,
    image: &ImageRef,
    descriptors: impl Iterator<Item = &Descriptor>,
) -> Result<Vec<Blob>, ImageError> {
    let name = image.to_string();
    let mut blobs: Vec<Blob> = Vec::new();
    for d in descriptors {
        let digest = parse_digest(&d.digest).map_err(|what| ImageError::Manifest {
            image: name.clone(),
            what,
        })?;
        if blobs.iter().any(|b| b.digest == digest) {
            continue;
        }
        let lock = store.lock_key(&digest.to_string(), || {})?;
        let partial = store.layout().partial_download(&digest);
        fetcher
            .download(
                &image.url("blobs", &d.digest),
                &partial,
                Some(&digest),
                &NoProgress,
            )
            .await?;
        let guard =
            tempfile::TempPath::try_from_path(&partial)
                .map_err(crate::fsx::at::<ImageError>("cannot own", &partial))?;
        blobs.push(Blob {
            digest,
            path: partial,
            _partial: guard,
            _lock: lock,
        });
    }
    Ok(blobs)
}

/// The image's OCI layout archive into the store: oci-layout, index.json naming the image, the
/// manifest and the blobs. Deterministic (fixed order and times), so the same image always
/// makes the same archive. Returns its digest and size.
fn write_archive(
    store: &Store,
    image: &ImageRef,
    arch: Arch,
    m: &ImageManifest,
    blobs: &[Blob],
) -> Result<(Digest, u64), ImageError> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": m.media_type,
            "digest": m.digest.to_string(),
            "size": m.bytes.len(),
            "annotations": {
                "io.containerd.image.name": image.to_string(),
                "org.opencontainers.image.ref.name": image.tag,
            },
            "platform": { "os": "linux", "architecture": arch.to_string() },
        }],
    });
    let tmp = store.temp_file()?;
    let tmp_path = tmp.path().to_owned();
    let io = |e| crate::fsx::at::<ImageError>("cannot write", &tmp_path)(e);
    let header = |size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        h
    };
    {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
        let index = serde_json::to_string(&index).expect("a JSON value serializes");
        let small: [(&str, &[u8]); 3] = [
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", index.as_bytes()),
            (&blob_path(&m.digest), &m.bytes),
        ];
        for (path, bytes) in small {
            tar.append_data(&mut header(bytes.len() as u64), path, bytes)
                .map_err(io)?;
        }
        for b in blobs {
            let at = |action| crate::fsx::at::<ImageError>(action, &b.path);
            let mut f = std::fs::File::open(&b.path).map_err(at("cannot open"))?;
            let size = f.metadata().map_err(at("cannot stat"))?.len();
            tar.append_data(&mut header(size), blob_path(&b.digest), &mut f)
                .map_err(io)?;
        }
        let mut w = tar.into_inner().map_err(io)?;
        w.flush().map_err(io)?;
    }
    let (_, path) = tmp
        .keep()
        .map_err(|e| crate::fsx::at::<ImageError>("cannot keep", &tmp_path)(e.error))?;
    let size = std::fs::metadata(&path)
        .map_err(|e| crate::fsx::at::<ImageError>("cannot stat", &path)(e))?
        .len();
    Ok((store.insert_file(&path, None)?, size))
}

/// `blobs/sha256/<hex>` in an image layout.
fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algo().as_str(), d.hex())
}

fn sha256(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    Digest::sha256_of(&sha2::Sha256::digest(bytes))
}

fn parse_digest(s: &str) -> Result<Digest, String> {
    let d: Digest = s
        .parse()
        .map_err(|e| format!("{s:?} is not a digest: {e}"))?;
    if d.algo() != DigestAlgo::Sha256 {
        return Err(format!("{s}: only sha256 blobs are supported"));
    }
    Ok(d)
}

/// What each image's archive is called in a node bundle and a toolchain: name → file name.
pub fn archive_names(images: &[PulledImage]) -> BTreeMap<String, String> {
    images
        .iter()
        .filter_map(|i| {
            i.name
                .parse::<ImageRef>()
                .ok()
                .map(|r| (i.name.clone(), r.archive_name()))
        })
        .collect()
}

/// The file kbin keeps an image under inside a toolchain directory.
pub fn toolchain_path(toolchain_dir: &Path, image: &ImageRef) -> PathBuf {
    toolchain_dir.join("images").join(image.archive_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_refuse_what_is_not_one() {
        let r: ImageRef = "registry.k8s.io/coredns/coredns:v1.12.4".parse().unwrap();
        assert_eq!(r.repository, "coredns/coredns");
        assert_eq!(r.tag, "v1.12.4");
        assert_eq!(r.archive_name(), "coredns-v1.12.4.tar");
        assert_eq!(
            r.url("manifests", "v1.12.4"),
            "https://registry.k8s.io/v2/coredns/coredns/manifests/v1.12.4"
        );
        assert_eq!(ImageRef::coredns("1.12.4"), r);
        assert_eq!(
            ImageRef::pause("3.10.1").to_string(),
            "registry.k8s.io/pause:3.10.1"
        );
        let l: ImageRef = "127.0.0.1:5000/pause:3.10".parse().unwrap();
        assert_eq!(l.registry, "127.0.0.1:5000");
        for bad in [
            "pause:3.10",
            "registry.k8s.io/pause",
            "registry.k8s.io//x:1",
            "r.io/a:b/c",
            "r.io/a b:1",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}

/// What [`export_registry`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exported {
    /// Files written (verified) this time.
    pub written: usize,
    /// Files already there with the right content.
    pub reused: usize,
    /// Bytes written this time.
    pub bytes: u64,
    /// The images, `name (arch, …)`.
    pub images: Vec<String>,
    /// The images exported with their verified signature, `name (arch)`: a pull through the
    /// export verifies them as one from the registry.
    pub signed: Vec<String>,
}

/// One image to export: its archive in the store, and its kept signature if it has one.
#[derive(Debug, Clone)]
pub struct ExportImage {
    /// The image.
    pub image: ImageRef,
    /// Its architecture.
    pub arch: Arch,
    /// Its OCI image-layout archive in the store.
    pub archive: PathBuf,
    /// Its verified signature, as kept in the store.
    pub signature: Option<ExportSignature>,
}

/// A kept signature's blobs in the store, each with the digest it must have.
#[derive(Debug, Clone)]
pub struct ExportSignature {
    /// What the image's tag named when pulled (the digest the signature names).
    pub tag_document: (Digest, PathBuf),
    /// The signature manifest.
    pub manifest: (Digest, PathBuf),
    /// The payloads.
    pub payloads: Vec<(Digest, PathBuf)>,
}

impl ExportImage {
    /// What exporting pulled image `p` takes from `store`: its archive and, when it was
    /// signed, its kept signature (a record from a kbin that kept none exports without one).
    /// An error names the first blob the store lacks.
    pub fn of(store: &Store, p: &PulledImage) -> Result<ExportImage, ImageError> {
        let image: ImageRef = p.name.parse()?;
        let get = |d: &Digest| {
            store
                .get(d)
                .map(|path| (d.clone(), path))
                .ok_or_else(|| ImageError::MissingBlob {
                    image: p.name.clone(),
                    digest: d.clone(),
                })
        };
        let signature = match (&p.signed, &p.signature) {
            (Some(_), Some(k)) => Some(ExportSignature {
                tag_document: get(&p.digest)?,
                manifest: get(&k.manifest)?,
                payloads: k.payloads.iter().map(get).collect::<Result<_, _>>()?,
            }),
            _ => None,
        };
        Ok(ExportImage {
            archive: get(&p.archive)?.1,
            image,
            arch: p.arch,
            signature,
        })
    }
}

/// `path`'s bytes, if their sha256 is `digest`; a clear error naming the blob if not.
fn read_checked(image: &str, path: &Path, digest: &Digest) -> Result<Vec<u8>, ImageError> {
    let bytes = std::fs::read(path).map_err(crate::fsx::at::<ImageError>("cannot read", path))?;
    if sha256(&bytes) != *digest {
        return Err(ImageError::Manifest {
            image: image.to_owned(),
            what: format!(
                "the store's blob {digest} ({}) is damaged (run `kbin cache verify`, then pull it again)",
                path.display()
            ),
        });
    }
    Ok(bytes)
}

/// Write `bytes` (whose sha256 is `digest`) at `dest` unless it holds them already.
fn put_exported(
    dest: &Path,
    bytes: &[u8],
    digest: &Digest,
    report: &mut Exported,
) -> Result<(), ImageError> {
    if std::fs::read(dest).is_ok_and(|b| sha256(&b) == *digest) {
        report.reused += 1;
        return Ok(());
    }
    crate::fsx::write_atomic(dest, bytes, 0o644)?;
    report.written += 1;
    report.bytes += bytes.len() as u64;
    Ok(())
}

/// Lay out pulled images under `out` the way a registry serves them, so `--mirror file://DIR`
/// (or a static web server over DIR) answers a pull: `v2/<repo>/blobs/<digest>`,
/// `v2/<repo>/manifests/<digest>` and, per tag, `v2/<repo>/manifests/<tag>`: an OCI index of
/// every architecture exported (merged with one an earlier export wrote). A signed image's tag
/// is instead the document it named when pulled (the digest its signature names), and its
/// signature is where cosign puts it: `v2/<repo>/manifests/sha256-<hex>.sig` and its payloads
/// under `blobs/`. Each blob is checked against its digest as it is written; one already there
/// with the right digest is kept.
pub fn export_registry(out: &Path, images: &[ExportImage]) -> Result<Exported, ImageError> {
    let mut report = Exported::default();
    // tag path → (name, platform manifests).
    let mut tags: BTreeMap<PathBuf, (String, Vec<serde_json::Value>)> = BTreeMap::new();
    // tag path → the signed document the tag named when pulled (its digest, its bytes).
    let mut signed_tags: BTreeMap<PathBuf, (Digest, Vec<u8>)> = BTreeMap::new();
    for ExportImage {
        image,
        arch,
        archive,
        signature,
    } in images
    {
        let name = image.to_string();
        let bad = |what: String| ImageError::Manifest {
            image: name.clone(),
            what,
        };
        let repo = out.join("v2").join(&image.repository);
        let file = std::fs::File::open(archive)
            .map_err(crate::fsx::at::<ImageError>("cannot open", archive))?;
        let mut index: Option<Vec<u8>> = None;
        let mut blobs: Vec<(Digest, Vec<u8>)> = Vec::new();
        let mut tar = tar::Archive::new(std::io::BufReader::new(file));
        let entries = tar
            .entries()
            .map_err(crate::fsx::at::<ImageError>("cannot read", archive))?;
        for e in entries {
            let mut e = e.map_err(crate::fsx::at::<ImageError>("cannot read", archive))?;
            let path = e
                .path()
                .map_err(crate::fsx::at::<ImageError>("cannot read", archive))?
                .to_string_lossy()
                .into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes)
                .map_err(crate::fsx::at::<ImageError>("cannot read", archive))?;
            if path == "index.json" {
                index = Some(bytes);
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let digest = parse_digest(&format!("sha256:{hex}")).map_err(&bad)?;
                if sha256(&bytes) != digest {
                    return Err(bad(format!(
                        "{} holds a damaged blob {digest}",
                        archive.display()
                    )));
                }
                blobs.push((digest, bytes));
            }
        }
        let index: Document = serde_json::from_slice(
            &index.ok_or_else(|| bad(format!("{} has no index.json", archive.display())))?,
        )
        .map_err(|e| bad(format!("its archive's index.json: {e}")))?;
        let top = index
            .manifests
            .and_then(|m| m.into_iter().next())
            .ok_or_else(|| bad("its archive names no manifest".into()))?;
        let manifest_digest = parse_digest(&top.digest).map_err(&bad)?;
        for (digest, bytes) in &blobs {
            let kind = if *digest == manifest_digest {
                "manifests"
            } else {
                "blobs"
            };
            let dest = repo.join(kind).join(digest.to_string());
            if std::fs::read(&dest).is_ok_and(|b| sha256(&b) == *digest) {
                report.reused += 1;
                continue;
            }
            crate::fsx::write_atomic(&dest, bytes, 0o644)?;
            report.written += 1;
            report.bytes += bytes.len() as u64;
        }
        let entry = serde_json::json!({
            "mediaType": top.media_type.unwrap_or_else(|| OCI_MANIFEST.into()),
            "digest": manifest_digest.to_string(),
            "size": top.size,
            "platform": { "os": "linux", "architecture": arch.to_string() },
        });
        let tag_path = repo.join("manifests").join(&image.tag);
        if let Some(s) = signature {
            let (top_digest, top_path) = &s.tag_document;
            let top = read_checked(&name, top_path, top_digest)?;
            if let Some((other, _)) = signed_tags.get(&tag_path)
                && other != top_digest
            {
                return Err(bad(format!(
                    "its tag named {other} when one architecture was pulled and {top_digest} when another was, and one directory serves one tag: export them into separate directories"
                )));
            }
            put_exported(
                &repo.join("manifests").join(top_digest.to_string()),
                &top,
                top_digest,
                &mut report,
            )?;
            let (md, mp) = &s.manifest;
            put_exported(
                &repo.join("manifests").join(signature_tag(top_digest)),
                &read_checked(&name, mp, md)?,
                md,
                &mut report,
            )?;
            for (d, p) in &s.payloads {
                put_exported(
                    &repo.join("blobs").join(d.to_string()),
                    &read_checked(&name, p, d)?,
                    d,
                    &mut report,
                )?;
            }
            signed_tags.insert(tag_path.clone(), (top_digest.clone(), top));
            report.signed.push(format!("{name} ({arch})"));
        }
        tags.entry(tag_path)
            .or_insert_with(|| (name.clone(), Vec::new()))
            .1
            .push(entry);
        report.images.push(format!("{name} ({arch})"));
    }
    for (path, (name, mut entries)) in tags {
        // A signed image's tag is the very document its signature names: an index made here
        // would have another digest, and a pull through the export would find no signature.
        if let Some((digest, top)) = signed_tags.get(&path) {
            put_exported(&path, top, digest, &mut report)?;
            continue;
        }
        // Architectures an earlier export put in this tag's index stay in it.
        if let Some(old) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            && let Some(list) = old["manifests"].as_array()
        {
            for e in list {
                let arch = &e["platform"]["architecture"];
                if !entries
                    .iter()
                    .any(|x| x["platform"]["architecture"] == *arch)
                {
                    entries.push(e.clone());
                }
            }
        }
        entries.sort_by_key(|e| e["platform"]["architecture"].to_string());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
            "annotations": { "org.opencontainers.image.ref.name": name },
        });
        let text = serde_json::to_string(&index).expect("a JSON value serializes");
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            report.reused += 1;
        } else {
            crate::fsx::write_atomic(&path, text.as_bytes(), 0o644)?;
            report.written += 1;
        }
    }
    Ok(report)
}
