//! A fake upstream made from kbin's own manifest: every artifact of every Kubernetes minor's
//! default toolchain (its newest patch and each component's default version, amd64 and arm64),
//! their checksum files, the release listings `kbin update` reads and the pause and CoreDNS
//! images, all on one test server that is every upstream host's mirror; and a manifest that is
//! the real one with its pins replaced by the fakes' digests.
//!
//! So a command written for upstream (`kbin install 1.30`, `kbin install 1.31 --with
//! etcd=3.5.16 --require-pinned`, `kbin update`, `kbin mirror export 1.30`) runs as written with
//! `KBIN_MIRROR` and `KBIN_MANIFEST` set. Paths come from the manifest's own templates (through
//! [`Manifest::artifact_for`]), so an artifact added to toolchains.toml is served without a change
//! here. Binaries are shell scripts that print the version line the real ones print.

#![allow(dead_code)] // tests/fetch_env.rs includes common/ without using it

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kbin::manifest::{Arch, ArtifactFormat, Manifest, Origin};
use semver::Version;
use sha2::Digest as _;

use crate::common::server::Server;

/// The fake upstream: its server and the manifest that pins what it serves.
pub struct Upstream {
    /// Serves every upstream host's paths (use its base as `KBIN_MIRROR`).
    pub server: Server,
    /// The real manifest with the fakes' pins (use it as `KBIN_MANIFEST`).
    pub manifest: PathBuf,
}

/// One artifact to serve, gathered from the binaries it provides.
struct Artifact {
    format: ArtifactFormat,
    checksum_url: Option<String>,
    pin: String,
    /// `(member path in the archive, binary, version)`; one entry for a bare binary.
    members: Vec<(Option<String>, String, Version)>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A script that prints what `<binary> --version` prints, near enough for kbin's probe.
fn script(binary: &str, version: &Version) -> Vec<u8> {
    format!("#!/bin/sh\necho '{binary} version v{version}'\n").into_bytes()
}

fn tgz(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The path part of an upstream URL: what a mirror serves it at.
fn path_of(url: &str) -> String {
    url::Url::parse(url)
        .unwrap_or_else(|e| panic!("manifest URL {url}: {e}"))
        .path()
        .to_owned()
}

impl Upstream {
    /// Start the server and write the manifest into `dir`.
    pub fn start(dir: &Path) -> Upstream {
        let real =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("toolchains.toml"))
                .expect("toolchains.toml at the repository root");
        let cut = real
            .find("\n[pins]\n")
            .expect("toolchains.toml has a [pins] section");
        let unpinned = format!("{}\n", &real[..cut]);
        let m = Manifest::parse(&unpinned, Origin::Embedded).expect("the real manifest parses");

        // Every component version some minor's defaults name, and each minor's newest patch.
        let mut versions: BTreeMap<String, std::collections::BTreeSet<Version>> = BTreeMap::new();
        let mut images = std::collections::BTreeSet::new();
        for r in m.releases.values() {
            let Ok(d) = &r.defaults else { continue };
            versions
                .entry("kubernetes".into())
                .or_default()
                .insert(r.latest.clone());
            for (c, v) in &d.components {
                versions.entry(c.clone()).or_default().insert(v.clone());
            }
            images.insert(("pause".to_string(), d.images.pause.clone()));
            images.insert((
                "coredns/coredns".to_string(),
                format!("v{}", d.images.coredns),
            ));
        }

        let mut artifacts: BTreeMap<String, Artifact> = BTreeMap::new();
        for (name, vs) in &versions {
            let c = m.component(name).expect("defaults name known components");
            for v in vs {
                let Some(shipped) = c.shipped(v) else {
                    continue;
                };
                for arch in Arch::ALL {
                    for b in shipped.required.iter().chain(&shipped.optional) {
                        let choice = m
                            .artifact_for(c, b, v, arch)
                            .unwrap_or_else(|| panic!("no artifact provides {b} {v} {arch}"));
                        artifacts
                            .entry(choice.url.clone())
                            .or_insert_with(|| Artifact {
                                format: choice.format,
                                checksum_url: choice.checksum_url.clone(),
                                pin: choice.pin_key.to_string(),
                                members: Vec::new(),
                            })
                            .members
                            .push((choice.member.clone(), b.clone(), v.clone()));
                    }
                }
            }
        }

        let server = Server::start();
        let mut pins = String::from("[pins]\n");
        let mut sums: BTreeMap<String, String> = BTreeMap::new();
        for (url, a) in &artifacts {
            let body = match a.format {
                ArtifactFormat::Binary => {
                    let (_, b, v) = &a.members[0];
                    script(b, v)
                }
                ArtifactFormat::TarGz => tgz(&a
                    .members
                    .iter()
                    .map(|(member, b, v)| {
                        let member = member.clone().expect("archives name their members");
                        (member, script(b, v))
                    })
                    .collect::<Vec<_>>()),
            };
            let hex = sha256_hex(&body);
            pins.push_str(&format!("\"{}\" = \"sha256:{hex}\"\n", a.pin));
            if let Some(sum) = &a.checksum_url {
                let file = url.rsplit('/').next().unwrap_or(url);
                sums.entry(sum.clone())
                    .or_default()
                    .push_str(&format!("{hex}  {file}\n"));
            }
            server.put(&path_of(url), body);
        }
        for (url, text) in sums {
            server.put(&path_of(&url), text);
        }
        for (repo, tag) in &images {
            crate::common::registry::publish(&server, repo, tag);
        }
        // What `kbin update` reads: nothing newer than the manifest knows.
        for c in &m.components {
            let Some(l) = &c.releases else { continue };
            match l.format {
                kbin::manifest::ListingFormat::StableTxt => {
                    for r in m.releases.values() {
                        let url = l.url.replace("{minor}", &r.minor.to_string());
                        server.put(&path_of(&url), format!("v{}\n", r.latest));
                    }
                }
                kbin::manifest::ListingFormat::Github => server.put(&path_of(&l.url), "[]"),
            }
        }

        let manifest = dir.join("manifest.toml");
        std::fs::write(&manifest, format!("{unpinned}{pins}")).unwrap();
        Upstream { server, manifest }
    }
}
