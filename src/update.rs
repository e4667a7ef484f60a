//! `kbin update`: learn what upstream published after this kbin was built.
//!
//! Each component's `[component.releases]` says where its releases are listed: dl.k8s.io's
//! `stable-1.N.txt` (one request per known minor) or GitHub's release listing (one request).
//! A version newer than every known one of its line (`3.5.x`), or newer than all known, is new;
//! for each, upstream's checksum files are read (per artifact and arch) and the digests kept as
//! trust on first use, with the checksum file's URL and the time. Where upstream signs an
//! artifact, the signature is verified against that digest: a bundle as published, or a
//! detached `.sig` + `.cert` whose entry is looked up in Rekor ([`crate::rekor`]) and kept as a
//! bundle in the overlay, so installs verify it offline. The result is a new
//! [`Overlay`]; nothing is written here (the caller writes it atomically, only when all of it
//! was learned), so any failure leaves the overlay as it was.
//!
//! Defaults never change: a minor's defaults follow upstream's own (kubespray's and kubeadm's,
//! through `scripts/update-manifest`), which release listings do not say.

// Errors are the cold path, and their fields are what the user reads: no boxing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use semver::Version;
use serde::Serialize;

use crate::fetch::{FetchError, Fetcher};
use crate::manifest::{Arch, Component, KUBERNETES, ListingFormat, Manifest, Minor, Overlay, Tofu};

/// The most bytes a release listing may have (GitHub's first page is ≈ 0.5 MB).
const LISTING_MAX: usize = 8 << 20;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;

/// Why an update failed (the overlay is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// A component named on the command line is not in the manifest.
    #[error("{name:?} is not a component; components: {known}")]
    UnknownComponent {
        /// What was named.
        name: String,
        /// The manifest's components.
        known: String,
    },
    /// A listing, stable file or checksum file could not be fetched or read.
    #[error("cannot learn {component}'s releases")]
    Fetch {
        /// The component.
        component: String,
        /// The cause.
        #[source]
        source: FetchError,
    },
    /// A listing is not what its format says.
    #[error("{url} is not a {what}: {detail}")]
    Garbled {
        /// The listing's URL (upstream).
        url: String,
        /// What it should be.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The transparency log could not be asked about a new release's detached signature.
    #[error(
        "cannot verify the detached signature of {artifact} ({component}'s new release): nothing is recorded signed without a verified log entry"
    )]
    Rekor {
        /// The component.
        component: String,
        /// The artifact's upstream URL.
        artifact: String,
        /// Why.
        #[source]
        source: crate::rekor::RekorError,
    },
    /// A new release's signature was refused.
    #[error("the signature {url} of {component}'s new release was refused")]
    Signature {
        /// The component.
        component: String,
        /// The bundle's upstream URL.
        url: String,
        /// Why.
        #[source]
        source: crate::trust::SigError,
    },
}

/// One new release learned.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The component.
    pub component: String,
    /// For Kubernetes, the minor whose latest patch this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor: Option<String>,
    /// The newest version known before (of the same line), if any.
    pub from: Option<String>,
    /// The new version.
    pub to: String,
    /// Whether a minor's default changed (never: defaults follow upstream's own).
    pub default_changed: bool,
    /// Trust-on-first-use digests recorded for it: `<pin>/<arch>/<version>` → digest.
    pub digests: BTreeMap<String, String>,
    /// Those of them whose upstream signature verified: `<pin>/<arch>/<version>` → who signed.
    pub signed: BTreeMap<String, String>,
}

/// What `kbin update` did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// New releases, in manifest order.
    pub changes: Vec<Change>,
    /// Listings asked (upstream URLs), one request each.
    pub sources: Vec<String>,
    /// Checksum files read for new releases.
    pub checksums: usize,
    /// The overlay file, when it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<std::path::PathBuf>,
}

/// A listing request and what it can teach.
struct Probe<'m> {
    component: &'m Component,
    /// The minor, for per-minor files.
    minor: Option<Minor>,
    url: String,
}

/// Learn new releases of `only` (every component when empty) from upstream, starting from
/// `merged` (the manifest with `overlay` already merged). Returns the new overlay (`overlay`
/// plus what was learned, stamped `now`) and the report.
pub fn update(
    merged: &Manifest,
    overlay: &Overlay,
    fetcher: &Fetcher,
    only: &[String],
    now: &str,
    rekor: &str,
) -> Result<(Overlay, Report), UpdateError> {
    let probes = probes(merged, only)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UpdateError::Runtime)?;
    rt.block_on(async {
        let found = new_releases(merged, fetcher, &probes).await?;
        let wanted = checksums_wanted(merged, &found);
        // Built once, in this runtime, and only when a detached signature needs the log.
        let rekor_client = match wanted.iter().find(|w| w.detached.is_some()) {
            Some(w) => Some(crate::fetch::client(fetcher.options()).map_err(|source| {
                UpdateError::Fetch {
                    component: found[w.change].component.name.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let rekor = Rekor {
            client: rekor_client.as_ref(),
            base: rekor,
        };
        let digests = fetch_digests(fetcher, &rekor, &found, &wanted).await;
        let (next, changes) = learned(overlay, &found, &wanted, digests, now)?;
        let report = Report {
            changes,
            sources: probes.iter().map(|p| p.url.clone()).collect(),
            checksums: wanted.len(),
            overlay: None,
        };
        Ok((next, report))
    })
}

/// Fetch the checksum of each wanted artifact (and verify its signature), a few at a time, in
/// the order of `wanted`.
async fn fetch_digests(
    fetcher: &Fetcher,
    rekor: &Rekor<'_>,
    found: &[Found<'_>],
    wanted: &[Wanted],
) -> Vec<Result<Learned, UpdateError>> {
    futures_util::stream::iter(wanted)
        .map(|w| {
            let component = found[w.change].component.name.clone();
            async move {
                let d = fetcher
                    .checksum(&w.checksum_url, &w.file)
                    .await
                    .map_err(|source| UpdateError::Fetch {
                        component: component.clone(),
                        source,
                    })?;
                // A signature is over the sha256; a sha512 checksum file cannot be checked
                // against it without the bytes (install does).
                let sha256 = d.algo() == crate::manifest::DigestAlgo::Sha256;
                let (signed, bundle) = match (&w.signature, &w.detached) {
                    (Some((url, policy)), _) if sha256 => {
                        let bundle =
                            fetcher
                                .document(url, "application/json")
                                .await
                                .map_err(|source| UpdateError::Fetch {
                                    component: component.clone(),
                                    source,
                                })?;
                        let r = crate::trust::verify_bundle(&bundle, url, policy, d.hex())
                            .map_err(|source| UpdateError::Signature {
                                component,
                                url: url.clone(),
                                source,
                            })?;
                        (Some(r.signer), None)
                    }
                    (None, Some((det, policy))) if sha256 => {
                        let r = detached(fetcher, rekor, w, det, policy, &d, &component).await?;
                        (Some(r.signer), Some(r.bundle))
                    }
                    _ => (None, None),
                };
                Ok(Learned {
                    digest: d,
                    signed,
                    bundle,
                })
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// `overlay` with what was learned (the new versions, the checksums trusted on first use,
/// stamped `now`), and the changes to report.
fn learned(
    overlay: &Overlay,
    found: &[Found<'_>],
    wanted: &[Wanted],
    digests: Vec<Result<Learned, UpdateError>>,
    now: &str,
) -> Result<(Overlay, Vec<Change>), UpdateError> {
    let mut next = overlay.clone();
    let mut changes: Vec<Change> = found
        .iter()
        .map(|f| Change {
            component: f.component.name.clone(),
            minor: f.minor.map(|m| m.to_string()),
            from: f.from.as_ref().map(Version::to_string),
            to: f.to.to_string(),
            default_changed: false,
            digests: BTreeMap::new(),
            signed: BTreeMap::new(),
        })
        .collect();
    for (w, d) in wanted.iter().zip(digests) {
        let Learned {
            digest: d,
            signed,
            bundle,
        } = d?;
        changes[w.change]
            .digests
            .insert(w.key.clone(), d.to_string());
        if let Some(s) = &signed {
            changes[w.change]
                .signed
                .insert(w.key.clone(), s.identity.clone());
        }
        next.tofu.insert(
            w.key.clone(),
            Tofu {
                digest: d,
                source: w.checksum_url.clone(),
                fetched: now.to_owned(),
                signed,
                bundle,
            },
        );
    }
    for f in found {
        let list = match f.minor {
            Some(m) if f.component.name == KUBERNETES => {
                next.patches.entry(m.to_string()).or_default()
            }
            _ => next.versions.entry(f.component.name.clone()).or_default(),
        };
        if !list.contains(&f.to.to_string()) {
            list.push(f.to.to_string());
        }
    }
    if !changes.is_empty() {
        next.updated = now.to_owned();
    }
    Ok((next, changes))
}

/// What was learned of one artifact: its digest, who signed it (verified), and for a detached
/// signature the bundle made of it and its log entry.
struct Learned {
    digest: crate::manifest::Digest,
    signed: Option<crate::trust::Policy>,
    bundle: Option<String>,
}

/// The transparency log detached signatures are looked up in.
struct Rekor<'a> {
    /// Its HTTP client (built when some artifact needs it).
    client: Option<&'a reqwest::Client>,
    /// Its base URL.
    base: &'a str,
}

/// Verify `w`'s detached signature (`det`, by `policy`) over the blob with digest `d`: the
/// bundle a kbin mirror export carries when a mirror serves the signature (an air-gapped
/// machine cannot ask Rekor), else the `.sig` and `.cert` with the entries Rekor holds for
/// `d`. Unreachable log, missing files and refusals are each an error: never signed without
/// a verified entry.
async fn detached(
    fetcher: &Fetcher,
    rekor: &Rekor<'_>,
    w: &Wanted,
    det: &crate::manifest::Detached,
    policy: &crate::trust::Policy,
    d: &crate::manifest::Digest,
    component: &str,
) -> Result<crate::trust::Record, UpdateError> {
    let fetch_err = |source| UpdateError::Fetch {
        component: component.to_owned(),
        source,
    };
    let bundle_url = det.bundle_url();
    let mirrored = fetcher
        .resolve_url(&bundle_url)
        .is_ok_and(|u| u.as_str() != bundle_url);
    if mirrored {
        match fetcher.document(&bundle_url, "application/json").await {
            Ok(bundle) => {
                return crate::trust::verify_bundle(&bundle, &bundle_url, policy, d.hex()).map_err(
                    |source| UpdateError::Signature {
                        component: component.to_owned(),
                        url: bundle_url.clone(),
                        source,
                    },
                );
            }
            // Not exported (or an upstream-shaped mirror): ask the log as upstream would.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(fetch_err(e)),
        }
    }
    let (sig, cert) = futures_util::future::join(
        fetcher.document(&det.sig, "*/*"),
        fetcher.document(&det.cert, "*/*"),
    )
    .await;
    let (sig, cert) = (sig.map_err(fetch_err)?, cert.map_err(fetch_err)?);
    let client = rekor
        .client
        .expect("the Rekor client is built when an artifact has a detached signature");
    let entries = crate::rekor::entries(client, rekor.base, d.hex())
        .await
        .map_err(|source| UpdateError::Rekor {
            component: component.to_owned(),
            artifact: w.url.clone(),
            source,
        })?;
    crate::trust::verify_detached(
        &sig,
        &cert,
        entries,
        rekor.base,
        &bundle_url,
        policy,
        d.hex(),
    )
    .map_err(|source| UpdateError::Signature {
        component: component.to_owned(),
        url: det.sig.clone(),
        source,
    })
}

/// The listings to read: per component with a `[component.releases]`, one per known minor
/// (`stable-1.N.txt`) or one in all (GitHub's release list). Unknown names in `only` are an
/// error.
fn probes<'m>(merged: &'m Manifest, only: &[String]) -> Result<Vec<Probe<'m>>, UpdateError> {
    if let Some(n) = only.iter().find(|n| merged.component(n).is_none()) {
        return Err(UpdateError::UnknownComponent {
            name: n.clone(),
            known: merged.component_names(),
        });
    }
    let mut probes = Vec::new();
    for c in &merged.components {
        if !only.is_empty() && !only.contains(&c.name) {
            continue;
        }
        let Some(l) = &c.releases else { continue };
        match l.format {
            ListingFormat::StableTxt => {
                for minor in merged.releases.keys() {
                    probes.push(Probe {
                        component: c,
                        minor: Some(*minor),
                        url: l.url.replace("{minor}", &minor.to_string()),
                    });
                }
            }
            ListingFormat::Github => probes.push(Probe {
                component: c,
                minor: None,
                url: l.url.clone(),
            }),
        }
    }
    Ok(probes)
}

/// A release newer than every known one of its line.
struct Found<'m> {
    component: &'m Component,
    minor: Option<Minor>,
    from: Option<Version>,
    to: Version,
}

/// Read every listing at once, and keep what is new in them (each release once).
async fn new_releases<'m>(
    merged: &Manifest,
    fetcher: &Fetcher,
    probes: &[Probe<'m>],
) -> Result<Vec<Found<'m>>, UpdateError> {
    let bodies: Vec<Result<String, UpdateError>> = futures_util::stream::iter(probes)
        .map(|p| async move {
            fetcher
                .text(&p.url, LISTING_MAX)
                .await
                .map_err(|source| UpdateError::Fetch {
                    component: p.component.name.clone(),
                    source,
                })
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut found: Vec<Found<'m>> = Vec::new();
    for (p, body) in probes.iter().zip(bodies) {
        let body = body?;
        let listed = match p.minor {
            Some(m) => vec![stable_txt(&p.url, &body, m)?],
            None => github(&p.url, &body, p.component)?,
        };
        for (from, to) in new_versions(merged, p.component, p.minor, &listed) {
            if !found
                .iter()
                .any(|f| f.component.name == p.component.name && f.to == to)
            {
                found.push(Found {
                    component: p.component,
                    minor: p.minor,
                    from,
                    to,
                });
            }
        }
    }
    Ok(found)
}

/// One digest to learn from a checksum file.
struct Wanted {
    /// Index of its release in the list of new ones.
    change: usize,
    /// Its pin key.
    key: String,
    checksum_url: String,
    /// The artifact's file name, the line to find in the checksum file.
    file: String,
    /// Upstream's signature of it and who must have signed, if it publishes one.
    signature: Option<(String, crate::trust::Policy)>,
    /// Upstream's detached signature of it and who must have signed, if it publishes one.
    detached: Option<(crate::manifest::Detached, crate::trust::Policy)>,
    /// The artifact's upstream URL (for messages).
    url: String,
}

/// The checksum files to read for the new releases: per artifact and arch, what no pin covers.
fn checksums_wanted(merged: &Manifest, found: &[Found<'_>]) -> Vec<Wanted> {
    let mut wanted: Vec<Wanted> = Vec::new();
    for (change, f) in found.iter().enumerate() {
        let Some(shipped) = f.component.shipped(&f.to) else {
            continue;
        };
        for arch in Arch::ALL {
            for b in shipped.required.iter().chain(&shipped.optional) {
                let Some(a) = merged.artifact_for(f.component, b, &f.to, arch) else {
                    continue;
                };
                let Some(sum) = a.checksum_url else { continue };
                let key = a.pin_key.to_string();
                if a.pinned.is_some() || wanted.iter().any(|w| w.key == key) {
                    continue;
                }
                let file = a.url.rsplit('/').next().unwrap_or(&a.url).to_owned();
                wanted.push(Wanted {
                    change,
                    key,
                    checksum_url: sum,
                    file,
                    signature: a.signature,
                    detached: a.detached,
                    url: a.url.clone(),
                });
            }
        }
    }
    wanted
}

/// `stable-1.30.txt`: one line, `v1.30.14`, a patch of `minor`.
fn stable_txt(url: &str, body: &str, minor: Minor) -> Result<Version, UpdateError> {
    let garbled = |detail: String| UpdateError::Garbled {
        url: url.to_owned(),
        what: "stable release file (one line: v1.N.P)",
        detail,
    };
    let line = body.trim();
    let v = Version::parse(line.strip_prefix('v').unwrap_or(line)).map_err(|_| {
        garbled(format!(
            "it says {:?}",
            line.chars().take(60).collect::<String>()
        ))
    })?;
    if Minor::of(&v) != minor || !v.pre.is_empty() {
        return Err(garbled(format!("{line} is not a {minor} release")));
    }
    Ok(v)
}

/// The released versions in a GitHub release listing: tags that fill the component's tag
/// template, neither drafts nor pre-releases.
fn github(url: &str, body: &str, c: &Component) -> Result<Vec<Version>, UpdateError> {
    let garbled = |detail: String| UpdateError::Garbled {
        url: url.to_owned(),
        what: "GitHub release listing (a JSON array of releases with tag_name)",
        detail,
    };
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| garbled(format!("not JSON ({e})")))?;
    let list = v
        .as_array()
        .ok_or_else(|| garbled("not a JSON array".into()))?;
    let (prefix, suffix) = c.tag.split_once("{version}").unwrap_or(("v", ""));
    let mut out = Vec::new();
    for r in list {
        let tag = r
            .get("tag_name")
            .and_then(|t| t.as_str())
            .ok_or_else(|| garbled("a release has no tag_name".into()))?;
        let flag = |k: &str| r.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
        if flag("draft") || flag("prerelease") {
            continue;
        }
        let Some(v) = tag
            .strip_prefix(prefix)
            .and_then(|t| t.strip_suffix(suffix))
            .and_then(|t| Version::parse(t).ok())
        else {
            continue;
        };
        if v.pre.is_empty() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Every version of `c` the manifest knows: release patches (kubernetes), defaults, pins of its
/// artifacts, and what an earlier update learned.
fn known_versions(m: &Manifest, c: &Component) -> BTreeSet<Version> {
    let mut out = BTreeSet::new();
    for r in m.releases.values() {
        if c.name == KUBERNETES {
            out.extend(r.patches.iter().cloned());
        } else if let Ok(d) = &r.defaults
            && let Some(v) = d.components.get(&c.name)
        {
            out.insert(v.clone());
        }
    }
    let pins: BTreeSet<String> = c
        .artifacts
        .iter()
        .flat_map(|a| {
            c.binaries
                .iter()
                .chain(&c.optional_binaries)
                .map(|b| a.pin.replace("{binary}", b))
        })
        .collect();
    for k in m.pins.keys().chain(m.tofu.keys()) {
        if pins.contains(&k.pin) {
            out.insert(k.version.clone());
        }
    }
    if let Some(l) = m.learned.get(&c.name) {
        out.extend(l.iter().cloned());
    }
    out
}

/// The versions of `listed` that are new, each with the newest known one it follows: newer
/// than every known version of its `major.minor` line (a line kbin knows), or than all known.
/// For a per-minor file, only that minor's latest counts.
fn new_versions(
    m: &Manifest,
    c: &Component,
    minor: Option<Minor>,
    listed: &[Version],
) -> Vec<(Option<Version>, Version)> {
    let known = known_versions(m, c);
    let newest = known.iter().next_back().cloned();
    let mut out: Vec<(Option<Version>, Version)> = Vec::new();
    for v in listed {
        if known.contains(v) {
            continue;
        }
        let line = Minor::of(v);
        let line_newest = known.iter().rfind(|k| Minor::of(k) == line).cloned();
        let new = match (&line_newest, minor) {
            (Some(n), _) => v > n,
            (None, Some(_)) => false,
            (None, None) => newest.as_ref().is_none_or(|n| v > n),
        };
        // Of a line, only its newest listed release: the one an install would want.
        if new
            && !listed
                .iter()
                .any(|o| Minor::of(o) == line && o > v && !known.contains(o))
        {
            out.push((line_newest.or_else(|| newest.clone()), v.clone()));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Manifest {
        Manifest::embedded().unwrap()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn only_the_newest_release_of_a_known_line_or_a_newer_line_is_new() {
        let m = m();
        let etcd = m.component("etcd").unwrap();
        let listed = [
            v("3.4.40"),
            v("3.5.29"),
            v("3.5.33"),
            v("3.5.34"),
            v("3.5.35"),
            v("3.6.15"),
            v("3.7.0"),
        ];
        let got: Vec<String> = new_versions(&m, etcd, None, &listed)
            .into_iter()
            .map(|(f, t)| format!("{} -> {t}", f.map(|f| f.to_string()).unwrap_or_default()))
            .collect();
        // 3.4 is a line the manifest never had; 3.5.33 is pinned already.
        assert_eq!(
            got,
            ["3.5.33 -> 3.5.35", "3.6.14 -> 3.6.15", "3.6.14 -> 3.7.0"]
        );
    }

    #[test]
    fn listings_that_are_not_what_they_claim_are_refused() {
        let m = m();
        let etcd = m.component("etcd").unwrap();
        for body in ["<html>", "{}", "[{\"name\": \"x\"}]"] {
            assert!(github("u", body, etcd).is_err(), "{body}");
        }
        let got = github(
            "u",
            r#"[{"tag_name":"v3.6.15"},{"tag_name":"v3.7.0-rc.0","prerelease":true},{"tag_name":"v3.6.16","draft":true},{"tag_name":"api/v3.6.15"}]"#,
            etcd,
        )
        .unwrap();
        assert_eq!(got, [v("3.6.15")]);
        let minor: Minor = "1.30".parse().unwrap();
        assert_eq!(stable_txt("u", "v1.30.15\n", minor).unwrap(), v("1.30.15"));
        for bad in ["v1.31.0", "<html>", "", "v1.30.15-rc.1"] {
            assert!(stable_txt("u", bad, minor).is_err(), "{bad}");
        }
    }
}
