//! Getting the plan's artifacts into the store: a bounded pool of concurrent downloads, each
//! under a per-artifact lock (so concurrent kbin processes never fetch the same bytes twice),
//! verified while streaming, stored as a blob, and for archives the members the plan needs
//! unpacked once into blobs of their own.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;

use super::InstallError;
use super::plan::{Plan, PlannedArtifact};
use crate::archive::{self, Limits};
use crate::fetch::{FetchError, Fetcher};
use crate::fsx::{at, write_atomic};
use crate::manifest::{ArtifactFormat, Digest};
use crate::store::cas::{FileLock, sha256_file};
use crate::store::{Checked, Store};
use crate::ui::Ui;
use crate::ui::progress::Bars;

/// Get every artifact of `plan` into the store, `jobs` downloads at a time, with progress on
/// `ui`. Returns one [`Fetched`] per [`Plan::artifacts`], in order.
pub(super) fn fetch_all(
    store: &Store,
    fetcher: &Fetcher,
    plan: &Plan,
    jobs: usize,
    ui: &Ui,
) -> Result<Vec<Fetched>, InstallError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(at::<InstallError>(
            "cannot start the runtime for",
            store.layout().root(),
        ))?;
    let progress = Bars::new(ui);
    let fetched: Vec<Result<Fetched, InstallError>> = rt.block_on(async {
        // Unordered, so that one slow download never keeps a free slot from the next one.
        let mut done: Vec<(usize, Result<Fetching, InstallError>)> =
            futures_util::stream::iter(plan.artifacts.iter().cloned().enumerate())
                .map(|(i, a)| {
                    let store = store.clone();
                    let fetcher = fetcher.clone();
                    let progress = progress.clone();
                    let ui = ui.clone();
                    let require_verified = plan.require_verified;
                    let members: Vec<String> = plan
                        .binaries
                        .iter()
                        .filter(|b| b.artifact == i)
                        .filter_map(|b| b.member.clone())
                        .collect();
                    async move {
                        let f = match fetch_artifact(
                            &store,
                            &fetcher,
                            &a,
                            &progress,
                            &ui,
                            require_verified,
                        )
                        .await
                        {
                            Ok(f) => f,
                            Err(e) => return (i, Err(e)),
                        };
                        // An archive is unpacked on a blocking thread while its pool slot
                        // goes to the next download.
                        let unpack = matches!(a.format, ArtifactFormat::TarGz).then(|| {
                            let sha256 = f.sha256.clone();
                            tokio::task::spawn_blocking(move || {
                                let blob = store
                                    .get(&sha256)
                                    .expect("fetch_artifact leaves the blob in the store");
                                members_of(&store, &sha256, &blob, &members, |m| ui.warn(m))
                            })
                        });
                        (i, Ok(Fetching { fetched: f, unpack }))
                    }
                })
                .buffer_unordered(jobs.max(1))
                .collect()
                .await;
        done.sort_by_key(|(i, _)| *i);
        let mut out = Vec::with_capacity(done.len());
        for (_, r) in done {
            out.push(match r {
                Err(e) => Err(e),
                Ok(Fetching {
                    mut fetched,
                    unpack,
                }) => match unpack {
                    None => Ok(fetched),
                    Some(h) => match h.await {
                        Ok(Ok(m)) => {
                            fetched.members = m;
                            Ok(fetched)
                        }
                        Ok(Err(e)) => Err(e),
                        Err(e) => Err(InstallError::Task(e.to_string())),
                    },
                },
            });
        }
        out
    });
    progress.done();
    fetched.into_iter().collect()
}

/// The result of getting one artifact into the store.
#[derive(Debug)]
pub(super) struct Fetched {
    /// The blob's sha256 (its name in the store).
    pub sha256: Digest,
    /// The digest it was verified against (pin, known, or upstream's checksum file).
    pub verified: Digest,
    /// It was downloaded by this run (not found in the store).
    pub downloaded: bool,
    /// Bytes transferred by this run.
    pub bytes: u64,
    /// For archives: member path → blob digest.
    pub members: BTreeMap<String, Digest>,
    /// Who signed it, when upstream publishes a signature (verified offline).
    pub signed: Option<crate::trust::Policy>,
}

/// An artifact in the store whose members may still be being unpacked.
struct Fetching {
    fetched: Fetched,
    unpack: Option<tokio::task::JoinHandle<Result<BTreeMap<String, Digest>, InstallError>>>,
}

async fn fetch_artifact(
    store: &Store,
    fetcher: &Fetcher,
    a: &PlannedArtifact,
    bars: &Arc<Bars>,
    ui: &Ui,
    require_verified: bool,
) -> Result<Fetched, InstallError> {
    let hit = |d: &Digest| -> Result<Option<Fetched>, InstallError> {
        let p = match store.check(d)? {
            Checked::Intact(p) => p,
            Checked::Missing => return Ok(None),
            Checked::Damaged(bad) => {
                ui.warn(format!(
                    "the cached {} was damaged ({bad}): removed it, fetching it again",
                    a.file_name
                ));
                return Ok(None);
            }
        };
        let sha256 = if d.algo() == crate::manifest::DigestAlgo::Sha256 {
            d.clone()
        } else {
            sha256_file(&p)?.0
        };
        Ok(Some(Fetched {
            sha256,
            verified: d.clone(),
            downloaded: false,
            bytes: 0,
            members: BTreeMap::new(),
            signed: None,
        }))
    };
    if let Some(d) = a.expected()
        && let Some(mut f) = hit(d)?
    {
        f.signed = signature_of(store, fetcher, a, &f.sha256, None, ui).await?;
        let asc = asc_of(store, fetcher, a, &f.sha256, Cached, require_verified, ui).await?;
        f.signed = f.signed.or(asc);
        return Ok(f);
    }
    let expected = expected_digest(fetcher, a, bars, ui).await?;
    // One process at a time per artifact: the second waits, then finds the blob.
    let lock_key = expected.to_string();
    let s2 = store.clone();
    let ui2 = ui.clone();
    let name = a.file_name.clone();
    let _lock: FileLock = tokio::task::spawn_blocking(move || {
        s2.lock_key(&lock_key, || {
            ui2.status(format!("waiting for another kbin downloading {name}…"))
        })
    })
    .await
    .map_err(|e| InstallError::Task(e.to_string()))??;
    if let Some(mut f) = hit(&expected)? {
        f.signed = signature_of(store, fetcher, a, &f.sha256, None, ui).await?;
        let asc = asc_of(store, fetcher, a, &f.sha256, Cached, require_verified, ui).await?;
        f.signed = f.signed.or(asc);
        return Ok(f);
    }
    download(store, fetcher, a, bars, expected, require_verified, ui).await
}

/// The digest to verify `a` against: its pin or the one `kbin update` trusted on first use
/// (said, when not pinned), else upstream's checksum file (said too).
async fn expected_digest(
    fetcher: &Fetcher,
    a: &PlannedArtifact,
    bars: &Arc<Bars>,
    ui: &Ui,
) -> Result<Digest, InstallError> {
    if a.pinned.is_none()
        && let Some(t) = &a.tofu
    {
        ui.warn(format!(
            "{} is not pinned in the manifest; verified against the digest `kbin update` trusted \
             on first use ({}, {})",
            a.file_name, t.source, t.fetched
        ));
    }
    Ok(match a.expected() {
        Some(d) => d.clone(),
        None => {
            let url = a.checksum_url.as_deref().ok_or_else(|| {
                InstallError::Unpinned(vec![format!(
                    "{} (and upstream has no checksum file)",
                    a.url
                )])
            })?;
            let retries = bars.retries(&format!("{} (checksum)", a.file_name));
            let d = fetcher
                .checksum_with_progress(url, &a.file_name, &retries)
                .await?;
            ui.warn(format!(
                "{} is not pinned in the manifest; verified against upstream's {url}",
                a.file_name
            ));
            d
        }
    })
}

/// Download `a` (its signature fetched alongside and verified first), check it against
/// `expected` and put it into the store.
async fn download(
    store: &Store,
    fetcher: &Fetcher,
    a: &PlannedArtifact,
    bars: &Arc<Bars>,
    expected: Digest,
    require_verified: bool,
    ui: &Ui,
) -> Result<Fetched, InstallError> {
    let partial = store.layout().partial_download(&expected);
    let bar = bars.add(&a.file_name);
    // The signature (a few KB) is fetched while the artifact streams, so it adds no round trip.
    let prefetch = async {
        match &a.signature {
            Some(_) if a.stored_bundle().is_some() => None,
            Some((url, _)) => Some(fetcher.document(url, "application/json").await),
            None => None,
        }
    };
    // Likewise the OpenPGP signature, unless an earlier install verified it for these bytes.
    let asc_prefetch = async {
        match &a.asc {
            Some((url, _))
                if crate::trust::Record::load(&store.layout().openpgp_record(&expected))
                    .is_none_or(|r| r.url != *url) =>
            {
                Some(fetcher.document(url, ASC_ACCEPT).await)
            }
            _ => None,
        }
    };
    let (done, bundle, asc) = futures_util::future::join3(
        fetcher.download(&a.url, &partial, Some(&expected), &*bar),
        prefetch,
        asc_prefetch,
    )
    .await;
    bars.finish(&bar, done.as_ref().ok().map(|d| d.size));
    let done = done?;
    // Verified before the blob is stored: a refused signature keeps nothing.
    let signed = match signature_of(store, fetcher, a, &done.sha256, bundle, ui).await {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&done.path);
            return Err(e);
        }
    };
    // The OpenPGP signature is over the bytes themselves: checked on the verified partial file,
    // before it becomes a blob.
    let signed = match asc_of(
        store,
        fetcher,
        a,
        &done.sha256,
        Downloaded(&done.path, asc),
        require_verified,
        ui,
    )
    .await
    {
        Ok(pgp) => signed.or(pgp),
        Err(e) => {
            let _ = std::fs::remove_file(&done.path);
            return Err(e);
        }
    };
    let digests = crate::store::cas::FileDigests {
        sha256: done.sha256.clone(),
        sha512: done.sha512.clone(),
        size: done.size,
    };
    let sha256 = store.insert_hashed(&done.path, &digests, Some(&expected))?;
    if a.pinned.is_none() {
        // Remember what upstream's checksum said, so a later install needs no request.
        let _ = write_atomic(
            &store.layout().url_index(&a.url),
            expected.to_string().as_bytes(),
            0o644,
        );
    }
    Ok(Fetched {
        sha256,
        verified: expected,
        downloaded: true,
        bytes: done.size - done.resumed_from,
        members: BTreeMap::new(),
        signed,
    })
}

/// Who signed the blob `sha256` of `a`, when upstream publishes a signature for it: the record
/// kept beside the blob by an earlier verification, else the bundle fetched and verified now
/// (offline, against the compiled-in trust root) and its record kept; `prefetched` is the
/// bundle's fetch when the caller made it already. A refused signature is an error: the caller
/// keeps nothing.
async fn signature_of(
    store: &Store,
    fetcher: &Fetcher,
    a: &PlannedArtifact,
    sha256: &Digest,
    prefetched: Option<Result<Vec<u8>, FetchError>>,
    ui: &Ui,
) -> Result<Option<crate::trust::Policy>, InstallError> {
    let Some((url, policy)) = &a.signature else {
        return Ok(None);
    };
    let path = store.layout().signature_record(sha256);
    if let Some(r) = crate::trust::Record::load(&path)
        && r.url == *url
        && r.signer == *policy
    {
        return Ok(Some(r.signer));
    }
    // The bundle `kbin update` made of a detached signature and its Rekor entry: verified
    // offline like any bundle (air-gapped too), never fetched.
    let fetched = match (a.stored_bundle(), prefetched) {
        (Some(b), _) => Ok(b.as_bytes().to_vec()),
        (None, Some(f)) => f,
        (None, None) => fetcher.document(url, "application/json").await,
    };
    let bundle = match fetched {
        Ok(b) => b,
        // A pinned artifact is vouched for by its pin: a mirror without its bundle (an export
        // made before the manifest named one) does not block it.
        Err(e) if e.is_not_found() && a.pinned.is_some() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let record = match crate::trust::verify_bundle(&bundle, url, policy, sha256.hex()) {
        Ok(r) => r,
        Err(e) if a.pinned.is_some() && e.unevaluable() => {
            unevaluable(a, url, &e, ui);
            return Ok(None);
        }
        Err(source) => {
            return Err(InstallError::Signature {
                url: a.url.clone(),
                signature: url.clone(),
                source: Box::new(source),
            });
        }
    };
    record.save(&path)?;
    Ok(Some(record.signer))
}

/// A pinned artifact's signature this kbin cannot evaluate: said, and left to its pin.
fn unevaluable(a: &PlannedArtifact, url: &str, e: &crate::trust::SigError, ui: &Ui) {
    ui.warn(format!(
        "{}: its signature {url} cannot be checked by this kbin ({e}); installed on its pin \
         (a newer kbin may know the log or key)",
        a.file_name
    ));
}

/// What an `.asc` is asked for as.
const ASC_ACCEPT: &str = "application/pgp-signature";

/// Where the bytes an `.asc` is checked over are.
enum Bytes<'p> {
    /// In the store already (an earlier install put them there).
    Cached,
    /// Just downloaded to this (verified) file, with the `.asc` fetched alongside, if it was.
    Downloaded(&'p Path, Option<Result<Vec<u8>, FetchError>>),
}
use Bytes::{Cached, Downloaded};

/// Who signed the blob `sha256` of `a` with OpenPGP, when the manifest names its `.asc`: the
/// record kept beside the blob by an earlier verification, else the `.asc` (fetched alongside,
/// or now) verified offline over `bytes` against the component's keyring, and its record kept.
/// A pinned blob already in the store without a record is left to its pin with no request: the
/// install that stored it looked for its `.asc` then. A missing `.asc` leaves a pinned artifact
/// to its pin and an unpinned one to upstream's checksum file (refused under
/// `--require-verified`); an `.asc` that is there and fails is always an error: the caller keeps
/// nothing.
async fn asc_of(
    store: &Store,
    fetcher: &Fetcher,
    a: &PlannedArtifact,
    sha256: &Digest,
    bytes: Bytes<'_>,
    require_verified: bool,
    ui: &Ui,
) -> Result<Option<crate::trust::Policy>, InstallError> {
    let Some((url, keyring)) = &a.asc else {
        return Ok(None);
    };
    let record_path = store.layout().openpgp_record(sha256);
    let issuer_suffix = format!("({keyring}.keyring)");
    if let Some(r) = crate::trust::Record::load(&record_path)
        && r.url == *url
        && r.signer.issuer.ends_with(&issuer_suffix)
    {
        return Ok(Some(r.signer));
    }
    let absent = store.layout().openpgp_absent(sha256);
    let (bytes, prefetched) = match bytes {
        Cached if a.pinned.is_some() => return Ok(None),
        Cached if std::fs::read_to_string(&absent).is_ok_and(|u| u == *url) => {
            return missing_asc(a, url, require_verified, ui);
        }
        Cached => (None, None),
        Downloaded(p, f) => (Some(p), f),
    };
    // Remembered for a later install from the store (offline too): upstream had no `.asc`.
    let remember_absent = || {
        let _ = write_atomic(&absent, url.as_bytes(), 0o644);
    };
    let fetched = match prefetched {
        Some(f) => f,
        None => fetcher.document(url, ASC_ACCEPT).await,
    };
    let asc = match fetched {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            let r = missing_asc(a, url, require_verified, ui);
            if r.is_ok() {
                remember_absent();
            }
            return r;
        }
        Err(e) => return Err(e.into()),
    };
    let blob = match bytes {
        Some(p) => p.to_path_buf(),
        None => store.get(sha256).ok_or_else(|| {
            InstallError::Task(format!("the blob {sha256} left the store while in use"))
        })?,
    };
    let (u, k) = (url.clone(), keyring.clone());
    // Hashing the bytes again (OpenPGP's own hash) is blocking work.
    let verified =
        tokio::task::spawn_blocking(move || crate::trust::verify_asc(&asc, &u, &k, &blob))
            .await
            .map_err(|e| InstallError::Task(e.to_string()))?;
    let record = match verified {
        Ok(r) => r,
        Err(e) if a.pinned.is_some() && e.unevaluable() => {
            unevaluable(a, url, &e, ui);
            return Ok(None);
        }
        Err(source) => {
            return Err(InstallError::Asc {
                asc: url.clone(),
                source,
            });
        }
    };
    record.save(&record_path)?;
    Ok(Some(record.signer))
}

/// Upstream has no `.asc` for `a` at `url`: its pin vouches for a pinned artifact; an unpinned
/// one has only the checksum file, which `--require-verified` refuses.
fn missing_asc(
    a: &PlannedArtifact,
    url: &str,
    require_verified: bool,
    ui: &Ui,
) -> Result<Option<crate::trust::Policy>, InstallError> {
    if a.pinned.is_some() {
        return Ok(None);
    }
    if require_verified {
        return Err(InstallError::Unverified(vec![format!(
            "{} (checksum file only: no OpenPGP signature at {url})",
            a.url
        )]));
    }
    ui.warn(format!(
        "{} has no OpenPGP signature upstream ({url} not found): verified by upstream's checksum \
         file only",
        a.file_name
    ));
    Ok(None)
}

/// The member path → blob digest of an archive's members, extracting them once: the result is
/// kept in `cache/trees/<digest>/members.toml` (the members themselves are blobs).
fn members_of(
    store: &Store,
    archive_digest: &Digest,
    archive_blob: &Path,
    members: &[String],
    on_damage: impl Fn(String),
) -> Result<BTreeMap<String, Digest>, InstallError> {
    let index = store.layout().members_index(archive_digest);
    // name → its blob's digest, or ABSENT: an optional binary this archive does not hold
    // (recorded, so the archive is not unpacked again on every call to look for it).
    let mut entries: BTreeMap<String, String> = std::fs::read_to_string(&index)
        .ok()
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default();
    let known = |entries: &BTreeMap<String, String>| -> BTreeMap<String, Digest> {
        entries
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?)))
            .collect()
    };
    let mut missing: Vec<&str> = Vec::new();
    for m in members {
        let have = match entries.get(m) {
            None => false,
            Some(v) if v == ABSENT => true,
            Some(v) => match v.parse::<Digest>() {
                Err(_) => false,
                // Checked before it is linked anywhere: a damaged member blob is removed by
                // the check and unpacked again from its (checked) archive.
                Ok(d) => match store.check(&d)? {
                    Checked::Intact(_) => true,
                    Checked::Missing => false,
                    Checked::Damaged(bad) => {
                        on_damage(format!(
                            "{m} of {} was damaged in the store ({bad}): unpacking it again",
                            archive_blob.display()
                        ));
                        false
                    }
                },
            },
        };
        if !have {
            missing.push(m);
        }
    }
    if missing.is_empty() {
        return Ok(known(&entries));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".members-")
        .tempdir_in(store.layout().tmp_dir())
        .map_err(at::<InstallError>(
            "cannot create a directory in",
            &store.layout().tmp_dir(),
        ))?;
    let got = archive::extract_members(archive_blob, &missing, tmp.path(), &Limits::default())?;
    for w in &missing {
        entries.insert((*w).to_owned(), ABSENT.to_owned());
    }
    for m in got {
        let d = store.insert_hashed(
            &m.path,
            &crate::store::cas::FileDigests {
                sha256: m.sha256.clone(),
                sha512: None,
                size: m.size,
            },
            Some(&m.sha256),
        )?;
        // `extract_members` normalizes `./x` to `x`; index under the name the plan uses.
        let asked = missing
            .iter()
            .find(|w| w.trim_start_matches("./") == m.name)
            .map_or(m.name.clone(), |w| (*w).to_owned());
        entries.insert(asked, d.to_string());
    }
    let text = toml::to_string(&entries).expect("a map of strings serializes");
    write_atomic(&index, text.as_bytes(), 0o644)?;
    Ok(known(&entries))
}

/// In a members index: the archive does not hold this (optional) member.
const ABSENT: &str = "absent";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Layout;

    #[test]
    fn an_optional_member_the_archive_lacks_is_looked_for_once() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(Layout::new(d.path().join("home"))).unwrap();
        store.layout().ensure().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/ctr"), b"ctr").unwrap();
        let tgz = d.path().join("a.tar.gz");
        let ok = std::process::Command::new("tar")
            .arg("czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&src)
            .arg("bin")
            .status()
            .unwrap();
        assert!(ok.success());
        let digest = crate::store::cas::sha256_file(&tgz).unwrap().0;
        let wanted = vec!["bin/ctr".to_owned(), "bin/containerd-stress".to_owned()];
        let first = members_of(&store, &digest, &tgz, &wanted, |_| {}).unwrap();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["bin/ctr"]);
        // The archive is gone: a second call that unpacked it again would fail.
        let gone = d.path().join("gone.tar.gz");
        let again = members_of(&store, &digest, &gone, &wanted, |_| {}).unwrap();
        assert_eq!(again, first);
        let index = std::fs::read_to_string(store.layout().members_index(&digest)).unwrap();
        assert!(
            index.contains("\"bin/containerd-stress\" = \"absent\""),
            "{index}"
        );
        // A member asked for the first time is still looked for.
        let err = members_of(&store, &digest, &gone, &["bin/runc".to_owned()], |_| {}).unwrap_err();
        assert!(err.to_string().contains("gone.tar.gz"), "{err}");
    }
}
