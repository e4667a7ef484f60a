//! `kbin mirror export`: an upstream-shaped directory for machines without network.
//!
//! The directory is what `--mirror file://DIR` (or any static web server over it) serves: each
//! artifact at its upstream URL's path (`release/v1.30.14/bin/linux/amd64/kubectl`,
//! `etcd-io/etcd/releases/download/v3.5.16/…`), its checksum file beside it as upstream names
//! it, and what `kbin update` reads: `release/stable-1.N.txt` for every known minor and GitHub's
//! release listing of each component (`repos/OWNER/REPO/releases`), naming the exported
//! versions and those `kbin update` learned, whose trust-on-first-use digests go into the
//! checksum files too. So an air-gapped `kbin update --mirror file://DIR` learns the same
//! patches, and `kbin install --mirror file://DIR` gets the same bytes. Each artifact's signature
//! (its Sigstore bundle or OpenPGP `.asc`, as verified when it was fetched) is beside it at its
//! upstream path, so
//! an install from the mirror verifies it as a connected one does. The bundles `kbin update`
//! made of detached signatures (dl.k8s.io's `.sig` + `.cert` and their Rekor entry) are written
//! at `<binary>.sigstore.json` for every release it learned, so an air-gapped `kbin update
//! --mirror` learns them signed without asking Rekor.
//!
//! Every file is copied from the store through a hasher into a temporary file beside its final
//! path, checked against the digest the store holds it under, then renamed: nothing unverified
//! is ever at a final path. A file already there with the right digest is kept (re-export).
//! Files are not fsynced one by one (see [`copy_verified`]): whoever reads an export verifies it.

// Errors are the cold path, and their fields are what the user reads: no boxing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Serialize;

use crate::fsx::{PathIo, at, temp_beside};
use crate::manifest::{Digest, DigestAlgo, KUBERNETES, ListingFormat, Manifest};
use crate::store::Layout;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// Hashing a file failed.
    #[error(transparent)]
    Store(#[from] crate::store::CasError),
    /// An artifact's URL has no path kbin can put under the directory.
    #[error("cannot place {url} under the mirror directory: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A file copied out of the store is not what the store says it is.
    #[error("{} has digest {actual} after copying {}, expected {expected}: the store is damaged", dest.display(), src.display())]
    Mismatch {
        /// The blob.
        src: PathBuf,
        /// The copy.
        dest: PathBuf,
        /// Its digest in the store.
        expected: Digest,
        /// What was copied.
        actual: Digest,
    },
    /// A version named for export does not resolve.
    #[error(transparent)]
    Resolve(#[from] crate::manifest::resolve::ResolveError),
    /// Planning or fetching a version's artifacts failed.
    #[error(transparent)]
    Install(#[from] crate::install::InstallError),
    /// The runtime for the image pulls could not start.
    #[error("cannot start the runtime for image pulls")]
    Runtime(#[source] std::io::Error),
    /// A file fetched a moment ago is not in the store.
    #[error("{0} fetched a moment ago is not in the store")]
    Vanished(String),
    /// A toolchain named for export is not installed.
    #[error("toolchain {0:?} is not installed")]
    NotInstalled(String),
    /// A toolchain's receipt cannot be read.
    #[error(transparent)]
    Receipt(#[from] crate::toolchain::receipt::ReceiptError),
    /// A toolchain's receipt names an image kbin cannot parse.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// A blob a toolchain's receipt names is gone from the store.
    #[error("{what} ({digest}) of toolchain {toolchain} is not in the store")]
    MissingBlob {
        /// The artifact's URL or the image's name.
        what: String,
        /// Its digest.
        digest: String,
        /// The toolchain.
        toolchain: String,
    },
}

/// What one installed toolchain gives an export: its downloaded artifacts, its image archives,
/// and the components it built from source (not exported).
#[derive(Debug, Default)]
pub struct FromToolchain {
    /// Artifacts as downloaded.
    pub artifacts: Vec<Artifact>,
    /// Images: each one's archive and kept signature in the store.
    pub images: Vec<crate::images::ExportImage>,
    /// Components built from source.
    pub built: Vec<String>,
}

/// What Kubernetes `versions` give an export for each of `archs`: every artifact of the
/// version's default toolchain, fetched into `store` (`jobs` at a time) unless there already, and
/// its pause and CoreDNS images unless `no_images`.
#[allow(clippy::too_many_arguments)] // the export's own settings, each used once
pub fn from_versions(
    manifest: &Manifest,
    store: &crate::store::Store,
    fetcher: &crate::fetch::Fetcher,
    versions: &[String],
    archs: &[crate::manifest::Arch],
    jobs: usize,
    no_images: bool,
    ui: &crate::ui::Ui,
) -> Result<FromToolchain, MirrorError> {
    use crate::images::ImageRef;
    use crate::install::{self, Options};
    let mut out = FromToolchain {
        artifacts: Vec::new(),
        images: Vec::new(),
        built: Vec::new(),
    };
    let images_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MirrorError::Runtime)?;
    for v in versions {
        let request = crate::manifest::resolve::Request {
            version: v.clone(),
            ..Default::default()
        };
        let resolution = crate::manifest::resolve::resolve(manifest, &request)?;
        for arch in archs {
            let opts = Options {
                name: format!("mirror-export-{arch}"),
                arch: *arch,
                only: Vec::new(),
                require_pinned: false,
                require_verified: false,
                jobs,
                from_source: Vec::new(),
                // The images are pulled below, for the registry-shaped part.
                no_images: true,
            };
            let plan = install::plan(manifest, store, &resolution, &opts)?;
            if let (Some(i), false) = (&resolution.images, no_images) {
                for image in [ImageRef::pause(&i.pause), ImageRef::coredns(&i.coredns)] {
                    let pulled = images_rt.block_on(crate::images::pull(
                        fetcher,
                        store,
                        &image,
                        *arch,
                        &manifest.image_signer,
                    ))?;
                    let export =
                        crate::images::ExportImage::of(store, &pulled).map_err(|e| match e {
                            crate::images::ImageError::MissingBlob { .. } => {
                                MirrorError::Vanished(format!("image {image}"))
                            }
                            e => e.into(),
                        })?;
                    out.images.push(export);
                }
            }
            let digests = install::fetch_artifacts(store, fetcher, &plan, jobs, ui)?;
            for (a, d) in plan.artifacts.iter().zip(digests) {
                let blob = store
                    .get(&d)
                    .ok_or_else(|| MirrorError::Vanished(a.url.clone()))?;
                out.artifacts.push(Artifact {
                    component: a.component.clone(),
                    version: a
                        .version
                        .parse()
                        .map_err(|_| MirrorError::Vanished(format!("the version of {}", a.url)))?,
                    url: a.url.clone(),
                    checksum_url: a.checksum_url.clone(),
                    signature: kept_record(store, &d, Layout::signature_record),
                    asc: kept_record(store, &d, Layout::openpgp_record),
                    blob,
                    digest: d,
                });
            }
        }
    }
    Ok(out)
}

/// What toolchain `name` (installed under `layout`) gives an export; its images unless
/// `no_images`. Every blob its receipt names must still be in `store`.
pub fn from_toolchain(
    manifest: &Manifest,
    layout: &crate::store::Layout,
    store: &crate::store::Store,
    name: &str,
    no_images: bool,
) -> Result<FromToolchain, MirrorError> {
    use crate::toolchain::{Origin, Receipt};
    let path = layout.receipt_path(name);
    if !path.is_file() {
        return Err(MirrorError::NotInstalled(name.to_owned()));
    }
    let r = Receipt::load(&path)?;
    let missing = |what: &str, digest: &Digest| MirrorError::MissingBlob {
        what: what.to_owned(),
        digest: digest.to_string(),
        toolchain: name.to_owned(),
    };
    let mut out = FromToolchain::default();
    if !no_images {
        for p in &r.pulled {
            // Its archive and, when a signature vouched for it, that signature: an export of
            // an installed toolchain carries what a fresh pull's would.
            let export = crate::images::ExportImage::of(store, p).map_err(|e| match e {
                crate::images::ImageError::MissingBlob { image, digest } => {
                    missing(&image, &digest)
                }
                e => e.into(),
            })?;
            out.images.push(export);
        }
    }
    for c in &r.components {
        if c.origin != Origin::Download {
            out.built.push(c.name.clone());
            continue;
        }
        for a in &c.artifacts {
            let blob = store
                .get(&a.digest)
                .ok_or_else(|| missing(&a.url, &a.digest))?;
            out.artifacts.push(Artifact {
                component: c.name.clone(),
                version: c.version.clone(),
                checksum_url: checksum_url_of(manifest, &c.name, &c.version, r.arch, &a.url),
                url: a.url.clone(),
                signature: a
                    .signed
                    .as_ref()
                    .and_then(|_| kept_record(store, &a.digest, Layout::signature_record)),
                asc: a
                    .signed
                    .as_ref()
                    .and_then(|_| kept_record(store, &a.digest, Layout::openpgp_record)),
                blob,
                digest: a.digest.clone(),
            });
        }
    }
    Ok(out)
}

/// A verified signature kept beside the blob `digest` (sha256 digests only: signatures are
/// checked against one), at the path `record` gives: a Sigstore bundle or an `.asc`.
fn kept_record(
    store: &crate::store::Store,
    digest: &Digest,
    record: fn(&Layout, &Digest) -> PathBuf,
) -> Option<crate::trust::Record> {
    if digest.algo() != DigestAlgo::Sha256 {
        return None;
    }
    crate::trust::Record::load(&record(store.layout(), digest))
}

/// The checksum file of the artifact at `url` (a toolchain's receipt records only the URL).
fn checksum_url_of(
    m: &Manifest,
    component: &str,
    version: &Version,
    arch: crate::manifest::Arch,
    url: &str,
) -> Option<String> {
    let c = m.component(component)?;
    c.binaries
        .iter()
        .chain(&c.optional_binaries)
        .filter_map(|b| m.artifact_for(c, b, version, arch))
        .find(|a| a.url == url)
        .and_then(|a| a.checksum_url)
        .or_else(|| {
            c.artifacts.iter().find_map(|t| {
                c.binaries.iter().find_map(|b| {
                    (crate::manifest::expand(&t.url, version, arch, b) == url)
                        .then(|| {
                            t.checksum_url
                                .as_deref()
                                .map(|s| crate::manifest::expand(s, version, arch, b))
                        })
                        .flatten()
                })
            })
        })
}

/// One artifact to export.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The component.
    pub component: String,
    /// Its version.
    pub version: Version,
    /// The upstream URL.
    pub url: String,
    /// Upstream's checksum file for it, if any.
    pub checksum_url: Option<String>,
    /// Upstream's signature of it, as verified when it was fetched: exported at its URL's
    /// path so an install from the mirror verifies it too.
    pub signature: Option<crate::trust::Record>,
    /// Upstream's OpenPGP signature of it (`.asc`), as verified when it was fetched: exported at
    /// its URL's path too.
    pub asc: Option<crate::trust::Record>,
    /// Its blob in the store.
    pub blob: PathBuf,
    /// The digest it is verified against (its blob's name, or the sha512 pin it is kept under).
    pub digest: Digest,
}

/// What the export wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The directory.
    pub out: PathBuf,
    /// Artifacts copied (verified) this time.
    pub written: usize,
    /// Artifacts already there with the right digest.
    pub reused: usize,
    /// Bytes of artifacts copied this time.
    pub bytes: u64,
    /// Checksum files, stable files, listings and the README written or kept.
    pub metadata: usize,
    /// Every artifact's path under the directory, sorted.
    pub artifacts: Vec<String>,
    /// The images, registry-shaped under `v2/`.
    pub images: crate::images::Exported,
}

/// The path under the mirror directory of an upstream URL (its path, kept as it is).
pub fn rel_path(url: &str) -> Result<String, MirrorError> {
    let bad = |why: &str| MirrorError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let path = parsed.path().trim_start_matches('/');
    if path.is_empty()
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad("its path is empty or not plain"));
    }
    Ok(path.to_owned())
}

/// Copy `src` to `dest`, then verify the copy against `expected` (and hash sha512 too when
/// `sha512`) before renaming it into place. Returns the sha512 when asked and the size.
///
/// The copy is the kernel's (`copy_file_range`, as `cp` does); the check reads the copy back,
/// so what is verified is what was written.
fn copy_verified(
    src: &Path,
    dest: &Path,
    expected: &Digest,
    sha512: bool,
) -> Result<(Option<Digest>, u64), MirrorError> {
    let dir = dest.parent().expect("mirror paths have a parent");
    std::fs::create_dir_all(dir).map_err(at::<PathIo>("cannot create", dir))?;
    // On the store's filesystem the export links the blob (as `cp -l` would): no byte is
    // written, and the link is still read once below to verify it. Elsewhere (a USB disk) it is
    // copied, and the copy read back.
    let linked = tempfile::Builder::new()
        .prefix(".tmp-")
        .make_in(dir, |p| std::fs::hard_link(src, p))
        .map(tempfile::NamedTempFile::into_temp_path);
    let tmp = match linked {
        Ok(t) => t,
        Err(_) => {
            let (file, tmp) = temp_beside(dest, 0o644)?;
            drop(file);
            std::fs::copy(src, &tmp).map_err(at::<PathIo>("cannot copy into", dest))?;
            // Blobs are read-only; the export's copies are ordinary files.
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .map_err(at::<PathIo>("cannot set the mode of", dest))?;
            tmp
        }
    };
    let also = (sha512 || expected.algo() == DigestAlgo::Sha512).then_some(DigestAlgo::Sha512);
    // A link to a store blob, or a copy only this export writes: nobody truncates it.
    let d = crate::store::cas::hash_immutable(&tmp, also)?;
    let actual = match expected.algo() {
        DigestAlgo::Sha256 => d.sha256.clone(),
        DigestAlgo::Sha512 => d.sha512.clone().expect("hashed with sha512 above"),
    };
    if actual != *expected {
        return Err(MirrorError::Mismatch {
            src: src.to_owned(),
            dest: dest.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    // No fsync per file (unlike the store): every reader of an export verifies each file
    // against its digest (a re-export re-hashes what it keeps, an install checks every
    // artifact), so a file a crash left short is found and rewritten, never trusted; and
    // fsyncing hundreds of MB file by file would make an export several times slower than the
    // `cp` it replaces. Run `sync` before unplugging the disk.
    rename_unsynced(tmp, dest)?;
    Ok((d.sha512, d.size))
}

/// Whether `dest` already holds the bytes of `expected` (a re-export).
fn holds(
    dest: &Path,
    expected: &Digest,
    sha512: bool,
) -> Result<Option<Option<Digest>>, MirrorError> {
    if !dest.is_file() {
        return Ok(None);
    }
    let also = (sha512 || expected.algo() == DigestAlgo::Sha512).then_some(DigestAlgo::Sha512);
    let d = crate::store::cas::hash_file(dest, also)?;
    let ok = match expected.algo() {
        DigestAlgo::Sha256 => d.sha256 == *expected,
        DigestAlgo::Sha512 => d.sha512.as_ref() == Some(expected),
    };
    Ok(ok.then_some(d.sha512))
}

/// Write `text` to `path` unless it holds it already: a temporary file renamed into place,
/// not fsynced, like the artifacts (see [`copy_verified`]). A file a crash left empty or short
/// is rewritten by the next export (which compares every byte), and what reads it fails
/// clearly on it: a checksum file that does not match, a listing that does not parse.
fn put_text(path: &Path, text: &str) -> Result<(), MirrorError> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let dir = path.parent().expect("mirror paths have a parent");
    std::fs::create_dir_all(dir).map_err(at::<PathIo>("cannot create", dir))?;
    let (mut file, tmp) = temp_beside(path, 0o644)?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(at::<PathIo>("cannot write", path))?;
    drop(file);
    rename_unsynced(tmp, path)
}

/// Rename the written temporary file `tmp` to `dest`, with no fsync (see [`copy_verified`]).
fn rename_unsynced(tmp: tempfile::TempPath, dest: &Path) -> Result<(), MirrorError> {
    tmp.persist(dest)
        .map_err(|e| at::<PathIo>("cannot rename into", dest)(e.error))?;
    Ok(())
}

/// Whether an artifact's checksum file is a sha512 one.
fn wants_sha512(a: &Artifact) -> bool {
    a.checksum_url
        .as_deref()
        .is_some_and(|u| u.ends_with(".sha512"))
}

/// The name part of a URL.
fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Export `artifacts` (with what `kbin update` reads, from `manifest`, the manifest with its
/// overlay) into `out`.
pub fn export(
    manifest: &Manifest,
    artifacts: &[Artifact],
    out: &Path,
) -> Result<Report, MirrorError> {
    std::fs::create_dir_all(out).map_err(at::<PathIo>("cannot create", out))?;
    let mut report = Report {
        out: out.to_owned(),
        ..Report::default()
    };
    let mut sums = copy_artifacts(artifacts, out, &mut report)?;
    tofu_sums(manifest, out, &mut sums, &mut report)?;
    write_sums(out, &sums, &mut report)?;
    write_listings(manifest, artifacts, out, &mut report)?;
    put_text(&out.join("README.md"), README)?;
    report.metadata += 1;
    report.artifacts.sort();
    Ok(report)
}

/// Checksum file path → artifact file name → digest.
type Sums = BTreeMap<String, BTreeMap<String, Digest>>;

/// Copy the distinct `artifacts` into `out` (with their signatures), counted in `report`;
/// returns the checksum lines they need.
fn copy_artifacts(
    artifacts: &[Artifact],
    out: &Path,
    report: &mut Report,
) -> Result<Sums, MirrorError> {
    let mut sums = Sums::new();
    // Distinct artifacts, then copied and verified two (or more) at a time: hashing is the
    // cost, and each file's is independent.
    let mut todo: Vec<(&Artifact, String)> = Vec::new();
    for a in artifacts {
        let rel = rel_path(&a.url)?;
        if !todo.iter().any(|(_, r)| *r == rel) {
            todo.push((a, rel));
        }
    }
    // At least two even on one core: the copies also wait on the disk.
    let workers = crate::util::cores().clamp(2, 8);
    let results = crate::util::try_parallel_map(&todo, workers, |(a, rel)| {
        let dest = out.join(rel);
        let want512 = wants_sha512(a);
        match holds(&dest, &a.digest, want512)? {
            Some(d512) => Ok((d512, None)),
            None => copy_verified(&a.blob, &dest, &a.digest, want512).map(|(d, n)| (d, Some(n))),
        }
    })?;
    for ((a, rel), (sha512, copied)) in todo.iter().zip(results) {
        match copied {
            Some(n) => {
                report.written += 1;
                report.bytes += n;
            }
            None => report.reused += 1,
        }
        report.artifacts.push(rel.clone());
        for sig in a.signature.iter().chain(&a.asc) {
            put_text(&out.join(rel_path(&sig.url)?), &sig.bundle)?;
            report.metadata += 1;
        }
        if let Some(sum) = &a.checksum_url {
            let digest = if wants_sha512(a) {
                sha512.expect("hashed with sha512 when the checksum file is one")
            } else if a.digest.algo() == DigestAlgo::Sha256 {
                a.digest.clone()
            } else {
                crate::store::cas::sha256_file(&a.blob)?.0
            };
            sums.entry(rel_path(sum)?)
                .or_default()
                .insert(file_name(&a.url).to_owned(), digest);
        }
    }
    Ok(sums)
}

/// Trust-on-first-use digests: the checksum lines `kbin update` will read for the releases it
/// learned, and (written into `out`) the bundles it made of their detached signatures.
fn tofu_sums(
    manifest: &Manifest,
    out: &Path,
    sums: &mut Sums,
    report: &mut Report,
) -> Result<(), MirrorError> {
    for (key, t) in &manifest.tofu {
        for c in &manifest.components {
            for b in c.binaries.iter().chain(&c.optional_binaries) {
                if !c
                    .artifacts
                    .iter()
                    .any(|a| a.pin.replace("{binary}", b) == key.pin)
                {
                    continue;
                }
                let Some(choice) = manifest.artifact_for(c, b, &key.version, key.arch) else {
                    continue;
                };
                if choice.pin_key != *key {
                    continue;
                }
                if let Some(sum) = &choice.checksum_url {
                    sums.entry(rel_path(sum)?)
                        .or_default()
                        .insert(file_name(&choice.url).to_owned(), t.digest.clone());
                }
                // The bundle `kbin update` made of a detached signature and its Rekor entry:
                // an air-gapped `kbin update --mirror` reads it there, as it cannot ask Rekor.
                if let (Some((d, _)), Some(bundle)) = (&choice.detached, &t.bundle) {
                    put_text(&out.join(rel_path(&d.bundle_url())?), bundle)?;
                    report.metadata += 1;
                }
            }
        }
    }
    Ok(())
}

/// Write the checksum files, each merged with the lines an earlier export wrote.
fn write_sums(out: &Path, sums: &Sums, report: &mut Report) -> Result<(), MirrorError> {
    for (rel, entries) in sums {
        let path = out.join(rel);
        // A re-export keeps the lines of other artifacts an earlier export wrote (SHA256SUMS
        // covers every arch).
        let mut lines: BTreeMap<String, String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (hex, name) = l.split_once(char::is_whitespace)?;
                Some((name.trim().to_owned(), hex.to_owned()))
            })
            .collect();
        for (name, d) in entries {
            lines.insert(name.clone(), d.hex().to_owned());
        }
        let text: String = lines
            .iter()
            .map(|(name, hex)| format!("{hex}  {name}\n"))
            .collect();
        put_text(&path, &text)?;
        report.metadata += 1;
    }
    Ok(())
}

/// What `kbin update` reads: each component's release listing, naming the exported versions
/// (and, but for Kubernetes, those `kbin update` learned).
fn write_listings(
    manifest: &Manifest,
    artifacts: &[Artifact],
    out: &Path,
    report: &mut Report,
) -> Result<(), MirrorError> {
    let mut exported: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    for a in artifacts {
        let list = exported.entry(a.component.clone()).or_default();
        if !list.contains(&a.version) {
            list.push(a.version.clone());
        }
    }
    for c in &manifest.components {
        let Some(l) = &c.releases else { continue };
        match l.format {
            ListingFormat::StableTxt => {
                for r in manifest.releases.values() {
                    let url = l.url.replace("{minor}", &r.minor.to_string());
                    put_text(&out.join(rel_path(&url)?), &format!("v{}\n", r.latest))?;
                    report.metadata += 1;
                }
            }
            ListingFormat::Github => {
                let mut versions: Vec<Version> = exported.get(&c.name).cloned().unwrap_or_default();
                if c.name != KUBERNETES
                    && let Some(l) = manifest.learned.get(&c.name)
                {
                    versions.extend(l.iter().cloned());
                }
                let text = github_listing(&c.tag, versions);
                put_text(&out.join(rel_path(&l.url)?), &text)?;
                report.metadata += 1;
            }
        }
    }
    Ok(())
}

/// GitHub's release listing of `versions` (newest first), tagged as `tag` names them.
fn github_listing(tag: &str, mut versions: Vec<Version>) -> String {
    versions.sort();
    versions.dedup();
    let (prefix, suffix) = tag.split_once("{version}").unwrap_or(("v", ""));
    let listing: Vec<serde_json::Value> = versions
        .iter()
        .rev()
        .map(|v| {
            serde_json::json!({
                "tag_name": format!("{prefix}{v}{suffix}"),
                "draft": false,
                "prerelease": false,
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&listing).expect("JSON serializes");
    format!("{text}\n")
}

/// The README an export carries.
const README: &str = "# A kbin mirror\n\n\
Written by `kbin mirror export`: release artifacts laid out like upstream (dl.k8s.io's and\n\
GitHub's paths), their checksum files, what `kbin update` reads (`release/stable-1.N.txt`,\n\
`repos/OWNER/REPO/releases`), and the pause and CoreDNS images laid out as registry.k8s.io\n\
serves them (`v2/<repo>/manifests/<tag>`, `v2/<repo>/blobs/<digest>`), each with its cosign\n\
signature where the registry signed it (`v2/<repo>/manifests/sha256-<hex>.sig`). Every file was\n\
verified against its digest as it was written.\n\n\
## Use it on a machine without network\n\n\
```sh\n\
kbin update --mirror file://$PWD            # learns the patches the exporting machine knew\n\
kbin install 1.30 --mirror file://$PWD      # the same bytes, verified again\n\
```\n\n\
## Or serve it to many machines\n\n\
Any static web server over this directory works; kbin keeps the upstream path and replaces\n\
the scheme and host:\n\n\
```sh\n\
python3 -m http.server 8080 --directory .   # then: kbin install 1.30 --mirror http://HOST:8080\n\
```\n\n\
nginx: `location / { root /srv/kbin-mirror; }`. Per host instead of for everything, in\n\
`$KBIN_HOME/settings.toml`:\n\n\
```toml\n\
[mirrors]\n\
\"dl.k8s.io\" = \"http://mirror.internal:8080\"\n\
\"github.com\" = \"http://mirror.internal:8080\"\n\
\"api.github.com\" = \"http://mirror.internal:8080\"\n\
\"registry.k8s.io\" = \"http://mirror.internal:8080\"   # the images, under v2/\n\
```\n\n\
Re-export into this directory to add versions: what is here already is kept.\n";
