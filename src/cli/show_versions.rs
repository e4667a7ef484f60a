//! `kbin show-versions`: installed toolchains, or with `--available` what kbin can install.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::Context;
use crate::error::WithHint;
use crate::manifest::{Arch, KUBERNETES, Manifest};
use crate::toolchain::Receipt;
use crate::ui::table;

/// Arguments of `kbin show-versions`.
#[derive(Debug, Args)]
pub struct ShowVersionsArgs {
    /// Show only this toolchain
    #[arg(value_name = "TOOLCHAIN", conflicts_with = "available")]
    pub toolchain: Option<String>,

    /// Show the Kubernetes versions kbin knows, with their component versions and pins
    #[arg(long)]
    pub available: bool,
}

/// `show-versions --available`: one entry per known minor.
#[derive(Debug, Serialize)]
pub struct Available {
    /// Which manifest this comes from.
    pub manifest: String,
    /// Its digest.
    pub manifest_digest: String,
    /// Known minors, oldest first.
    pub minors: Vec<AvailableMinor>,
    /// The overlay `kbin update` wrote, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<std::path::PathBuf>,
    /// Component releases `kbin update` learned (installable with `--with`), by component.
    pub learned: BTreeMap<String, Vec<String>>,
}

/// One known minor.
#[derive(Debug, Serialize)]
pub struct AvailableMinor {
    /// `1.30`.
    pub minor: String,
    /// Its latest known patch.
    pub latest: String,
    /// Every known patch.
    pub patches: Vec<String>,
    /// Component name to default version (kubernetes = latest); empty when incomplete.
    pub components: BTreeMap<String, String>,
    /// CoreDNS and pause image versions.
    pub images: Option<crate::manifest::Images>,
    /// Why the minor has no defaults, if it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// Per arch, per binary of the latest patch's default set: is its artifact pinned?
    pub pinned: BTreeMap<String, BTreeMap<String, bool>>,
    /// Per arch, the binaries of that set whose digest is trust on first use (`kbin update`):
    /// read from upstream's checksum file, not pinned by this kbin.
    pub tofu: BTreeMap<String, Vec<String>>,
    /// Per arch, those of `tofu` whose upstream signature `kbin update` verified: who signed
    /// each (what `--require-verified` accepts besides a pin).
    pub signed: BTreeMap<String, BTreeMap<String, String>>,
    /// Where the defaults come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Build the `--available` report from a manifest.
pub fn available(m: &Manifest) -> Available {
    let minors = m
        .releases
        .values()
        .map(|r| {
            let mut components = BTreeMap::new();
            let mut pinned: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
            let mut tofu: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut signed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            if let Ok(d) = &r.defaults {
                components.insert(KUBERNETES.to_string(), r.latest.to_string());
                for (k, v) in &d.components {
                    components.insert(k.clone(), v.to_string());
                }
            }
            for arch in Arch::ALL {
                let per = pinned.entry(arch.to_string()).or_default();
                for c in &m.components {
                    let version = if c.name == KUBERNETES {
                        Some(&r.latest)
                    } else {
                        r.defaults
                            .as_ref()
                            .ok()
                            .and_then(|d| d.components.get(&c.name))
                    };
                    let Some(version) = version else { continue };
                    for b in &c.binaries {
                        let a = m.artifact_for(c, b, version, arch);
                        let p = a.as_ref().is_some_and(|a| a.pinned.is_some());
                        if let Some(t) = a
                            .as_ref()
                            .filter(|a| a.pinned.is_none())
                            .and_then(|a| a.tofu.as_ref())
                        {
                            tofu.entry(arch.to_string()).or_default().push(b.clone());
                            if let Some(s) = &t.signed {
                                signed
                                    .entry(arch.to_string())
                                    .or_default()
                                    .insert(b.clone(), s.identity.clone());
                            }
                        }
                        per.insert(b.clone(), p);
                    }
                }
            }
            AvailableMinor {
                minor: r.minor.to_string(),
                latest: r.latest.to_string(),
                patches: r.patches.iter().map(|p| p.to_string()).collect(),
                components,
                images: r.defaults.as_ref().ok().map(|d| d.images.clone()),
                incomplete: r.defaults.as_ref().err().cloned(),
                pinned,
                tofu,
                signed,
                source: r.source.clone(),
            }
        })
        .collect();
    Available {
        manifest: m.origin.to_string(),
        manifest_digest: m.digest.to_string(),
        minors,
        overlay: m.overlay.clone(),
        learned: m
            .learned
            .iter()
            .map(|(c, vs)| (c.clone(), vs.iter().map(|v| v.to_string()).collect()))
            .collect(),
    }
}

fn render_available(a: &Available) -> String {
    let cols = ["etcd", "containerd", "runc", "cni-plugins", "crictl"];
    let mut rows = Vec::new();
    for m in &a.minors {
        let mut row = vec![m.minor.clone(), m.latest.clone()];
        if m.incomplete.is_some() {
            row.push("(no defaults yet)".into());
        } else {
            for c in cols {
                row.push(m.components.get(c).cloned().unwrap_or_default());
            }
            let img = m.images.as_ref();
            row.push(img.map(|i| i.coredns.clone()).unwrap_or_default());
            row.push(img.map(|i| i.pause.clone()).unwrap_or_default());
            let pins: Vec<String> = m
                .pinned
                .iter()
                .map(|(arch, bins)| {
                    let n = bins.values().filter(|p| **p).count();
                    let s = m.signed.get(arch).map_or(0, BTreeMap::len);
                    match m.tofu.get(arch).map(Vec::len).filter(|t| *t > 0) {
                        Some(t) if s > 0 => {
                            format!("{arch} {n}/{} (+{t} tofu, {s} of them signed)", bins.len())
                        }
                        Some(t) => format!("{arch} {n}/{} (+{t} tofu)", bins.len()),
                        None => format!("{arch} {n}/{}", bins.len()),
                    }
                })
                .collect();
            row.push(pins.join(", "));
        }
        rows.push(row);
    }
    let mut out = table(
        &[
            "MINOR",
            "LATEST",
            "ETCD",
            "CONTAINERD",
            "RUNC",
            "CNI",
            "CRICTL",
            "COREDNS",
            "PAUSE",
            "PINNED BINARIES",
        ],
        &rows,
    );
    out.push_str(&format!(
        "\nPINNED counts the binaries of each minor's default set whose artifact digest is pinned in \
         the manifest;\n\"tofu\" ones were read from upstream's checksum file by `kbin update` (trust on \
         first use;\n--require-pinned refuses them); the others are checked against upstream's \
         checksum file at install.\nmanifest: {}\n",
        a.manifest
    ));
    if let Some(o) = &a.overlay {
        out.push_str(&format!("updates: {} (kbin update)\n", o.display()));
    }
    for (c, vs) in &a.learned {
        out.push_str(&format!(
            "{c}: also {} (learned by kbin update; install with --with {c}=VERSION)\n",
            vs.join(", ")
        ));
    }
    out
}

pub(super) fn run(ctx: &Context, args: ShowVersionsArgs) -> anyhow::Result<ExitCode> {
    if args.available {
        let m = ctx.manifest()?;
        ctx.ui.answer(&available(&m), render_available)?;
        return Ok(ExitCode::SUCCESS);
    }
    installed(ctx, args.toolchain.as_deref())
}

/// One installed toolchain, as `show-versions` reports it.
#[derive(Debug, Serialize)]
pub struct Installed {
    /// Whether it is the default toolchain.
    pub default: bool,
    /// Its directory.
    pub path: std::path::PathBuf,
    /// Its receipt.
    #[serde(flatten)]
    pub receipt: Receipt,
    /// Its files that are not what the receipt says (empty: intact).
    pub damaged: Vec<crate::toolchain::integrity::Fault>,
    /// Per downloaded artifact, what vouched for it (`pinned`, `signed by …`, `checksum file
    /// only`).
    pub vouched: Vec<Vouched>,
}

/// What vouched for one artifact of an installed toolchain.
#[derive(Debug, Serialize)]
pub struct Vouched {
    /// Its component.
    pub component: String,
    /// Its upstream URL.
    pub url: String,
    /// `pinned`, `signed by <identity>` or `checksum file only`.
    pub vouch: String,
}

fn installed(ctx: &Context, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let layout = ctx.layout()?;
    let store = crate::store::Store::existing(layout.clone());
    let default = layout.settings()?.default;
    let names = layout.toolchain_names()?;
    if let Some(n) = only
        && !names.iter().any(|x| x == n)
    {
        return Err(anyhow::anyhow!("no toolchain named {n:?} is installed")).hint(
            "kbin show-versions lists the installed toolchains; kbin install VERSION adds one",
        );
    }
    let mut list = Vec::new();
    for name in names
        .iter()
        .filter(|n| only.is_none_or(|o| o == n.as_str()))
    {
        let receipt = Receipt::load(&layout.receipt_path(name))?;
        let damaged = crate::toolchain::integrity::check(
            &store,
            &receipt,
            crate::toolchain::integrity::Scope::Files,
        )?;
        let vouched = receipt
            .components
            .iter()
            .flat_map(|c| {
                c.artifacts.iter().map(|a| Vouched {
                    component: c.name.clone(),
                    url: a.url.clone(),
                    vouch: a.vouch().to_string(),
                })
            })
            .chain(receipt.pulled.iter().map(|p| Vouched {
                component: "image".into(),
                url: p.name.clone(),
                vouch: match &p.signed {
                    Some(s) => format!("signed by {}", s.identity),
                    None => "trusted on first use".into(),
                },
            }))
            .collect();
        list.push(Installed {
            vouched,
            default: default.as_deref() == Some(name.as_str()),
            path: layout.toolchain_dir(name),
            receipt,
            damaged,
        });
    }
    ctx.ui.answer(&list, render_installed)?;
    let broken: Vec<&str> = list
        .iter()
        .filter(|t| !t.damaged.is_empty())
        .map(|t| t.receipt.name.as_str())
        .collect();
    if broken.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    ctx.ui.warn(format!(
        "toolchain(s) {} no longer match their receipt: `kbin install` of the same version, or \
         `kbin cache verify --repair`, repairs them",
        broken.join(", ")
    ));
    Ok(ExitCode::FAILURE)
}

fn render_installed(list: &Vec<Installed>) -> String {
    if list.is_empty() {
        return "no toolchains installed: kbin install 1.30 (kbin show-versions --available lists versions)\n".into();
    }
    let mut out = String::new();
    for t in list {
        let r = &t.receipt;
        out.push_str(&format!(
            "{}{} — Kubernetes {} ({}) in {}\n",
            r.name,
            if t.default { " (default)" } else { "" },
            r.kubernetes,
            r.arch,
            t.path.display()
        ));
        let mut rows = Vec::new();
        let mut repro_lines = Vec::new();
        for c in &r.components {
            for b in &c.binaries {
                let fault = t.damaged.iter().find(|f| f.path == b.path);
                let outcome = c.source.as_ref().and_then(|s| s.reproduction.get(&b.name));
                if let Some(o) = outcome {
                    repro_lines.push(format!(
                        "{} {}: {}{}\n",
                        c.name,
                        b.name,
                        o.upstream,
                        o.rebuild
                            .as_deref()
                            .map(|r| format!("; second build: {r}"))
                            .unwrap_or_default()
                    ));
                }
                let pinned = match (c.origin, c.vouch()) {
                    // A source build is verified by what it was compared with.
                    (crate::toolchain::Origin::Source, _) => outcome
                        .map(|o| short_outcome(&o.upstream))
                        .unwrap_or("-")
                        .to_string(),
                    (crate::toolchain::Origin::Download, Some(v)) => v.to_string(),
                    _ => "-".to_string(),
                };
                let origin = match &c.source {
                    Some(s) => format!(
                        "source {}@{}",
                        s.git_ref,
                        &s.commit[..s.commit.len().min(12)]
                    ),
                    None => c.origin.to_string(),
                };
                // A binary whose bytes no longer match is never shown as verified.
                let pinned = match fault {
                    Some(_) => "DAMAGED".to_string(),
                    None => pinned,
                };
                rows.push(vec![
                    c.name.clone(),
                    b.name.clone(),
                    c.version.to_string(),
                    origin,
                    pinned,
                    format!("{}…", &b.digest.to_string()[..19]),
                    b.reports.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
        }
        rows.extend(image_rows(t));
        out.push_str(&table(
            &[
                "COMPONENT",
                "BINARY",
                "VERSION",
                "ORIGIN",
                "VERIFIED",
                "DIGEST",
                "REPORTS",
            ],
            &rows,
        ));
        for line in &repro_lines {
            out.push_str(line);
        }
        for f in &t.damaged {
            out.push_str(&format!("DAMAGED: {f}\n"));
        }
        out.push('\n');
    }
    out
}

/// The pulled images of `t`, a row each: what containerd names it by (the platform manifest's
/// digest) and what vouched for it, as for a binary.
fn image_rows(t: &Installed) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for p in &t.receipt.pulled {
        let Ok(image) = p.name.parse::<crate::images::ImageRef>() else {
            continue;
        };
        let rel = format!("images/{}", image.archive_name());
        let vouch = match (&p.signed, t.damaged.iter().any(|f| f.path == rel)) {
            (_, true) => "DAMAGED".to_string(),
            (Some(s), false) => format!("signed by {}", s.identity),
            (None, false) => "trusted on first use".to_string(),
        };
        rows.push(vec![
            "image".to_string(),
            format!("{}:{}", image.repository, image.tag),
            image.tag.clone(),
            "registry".to_string(),
            vouch,
            format!("{}…", &p.manifest.to_string()[..19]),
            "-".to_string(),
        ]);
    }
    rows
}

/// The VERIFIED column's word for a source build's comparison with upstream.
fn short_outcome(upstream: &str) -> &'static str {
    if upstream.starts_with("reproduces") {
        "reproduces upstream"
    } else if upstream.starts_with("differs") {
        "differs"
    } else {
        "not comparable"
    }
}
