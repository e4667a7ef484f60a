//! Keeping what upstream's release build has: a recipe's `[[component.recipe.release]]` row
//! says, for a range of versions, the build tags, cgo and self-reports of upstream's release
//! binaries and what the build needs on this machine. [`prepare`] checks the needs before
//! anything is fetched and drops only the tags whose library is missing (said, and recorded in
//! the receipt); [`verify`] asks each built binary what it is (`go version -m`, its own
//! `--version`) and refuses one that lacks what the row promised, before it reaches the store.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::manifest::{NeedKind, ReleaseBuild};

use super::SourceError;
use super::tools::find_on_path;

/// What a build keeps and drops of its release row, decided before the fetch.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The tags the binaries must carry (the row's, minus the dropped ones).
    pub tags: Vec<String>,
    /// The tags left out because their library is missing.
    pub dropped: Vec<String>,
    /// What the drops add to the recipe's environment.
    pub env: BTreeMap<String, String>,
    /// One line per drop, for the user.
    pub warnings: Vec<String>,
}

/// Whether pkg-config (on `path`) knows `module`; `None` when there is no pkg-config.
fn pkg_config_has(module: &str, path: &str) -> Option<bool> {
    let pc = find_on_path("pkg-config", path)?;
    let status = Command::new(pc)
        .args(["--exists", module])
        .env_clear()
        .env("PATH", path)
        .status()
        .ok()?;
    Some(status.success())
}

/// Check the row's needs and the recipe's program (`make`) on this machine, and decide which
/// tags to drop. Runs before anything is fetched: a missing library costs no clone.
pub fn prepare(
    component: &str,
    version: &semver::Version,
    row: Option<&ReleaseBuild>,
    program: &str,
    path: &str,
) -> Result<Prepared, SourceError> {
    let missing = |what: String, package: &str, why: &str| SourceError::MissingPrerequisite {
        component: component.to_owned(),
        version: version.clone(),
        what,
        why: why.to_owned(),
        package: package.to_owned(),
    };
    // The recipe's program (make, a script's interpreter is the script itself): `go` is left
    // to the Go version rule, which needs the repository's go.mod.
    if program == "make" && find_on_path("make", path).is_none() {
        return Err(missing("make".into(), "make", "the recipe's command"));
    }
    let Some(row) = row else {
        return Ok(Prepared::default());
    };
    for need in &row.needs {
        match &need.what {
            NeedKind::Tool(t) => {
                if find_on_path(t, path).is_none() {
                    return Err(missing(t.clone(), &need.package, &need.why));
                }
            }
            NeedKind::PkgConfig(m) => match pkg_config_has(m, path) {
                Some(true) => {}
                Some(false) => {
                    return Err(missing(
                        format!("the pkg-config module {m}"),
                        &need.package,
                        &need.why,
                    ));
                }
                None => {
                    return Err(missing(
                        format!("pkg-config (to find the module {m})"),
                        &format!("pkg-config {}", need.package),
                        &need.why,
                    ));
                }
            },
        }
    }
    let mut out = Prepared {
        tags: row.tags.clone(),
        ..Prepared::default()
    };
    for drop in &row.drops {
        if pkg_config_has(&drop.pkg_config, path) == Some(true) {
            continue;
        }
        out.tags.retain(|t| *t != drop.tag);
        out.dropped.push(drop.tag.clone());
        out.env.extend(drop.env.clone());
        out.warnings.push(format!(
            "building {component} {version} without the build tag {}: pkg-config finds no {} \
             (install {} to keep it); {} (recorded in the receipt)",
            drop.tag, drop.pkg_config, drop.package, drop.why
        ));
    }
    Ok(out)
}

/// What `go version -m` says of a binary: its build settings (`-tags`, `CGO_ENABLED`,
/// `GOEXPERIMENT`), or `None` when it is not a Go binary or there is no go.
pub(super) fn build_settings(binary: &Path, path: &str) -> Option<BTreeMap<String, String>> {
    let go = find_on_path("go", path)?;
    let out = Command::new(go)
        .args(["version", "-m"])
        .arg(binary)
        .env_clear()
        .env("PATH", path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| l.trim_start().strip_prefix("build\t"))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), unquote(v)))
            .collect(),
    )
}

/// A build setting's value as Go wrote it: quoted (Go syntax) when it holds a space, a quote
/// or a control character (`-ldflags="-X main.v=1 -s"`), else bare.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Check each built binary (`outputs`: name → path in the work tree) against the row (when
/// the recipe has one for this version): its Go build info carries the kept tags, the row's cgo
/// setting and the environment's GOEXPERIMENT (a go-fix's too, row or not); its self-reports
/// contain what the row says. The first mismatch is the error.
pub fn verify(
    component: &str,
    row: Option<&ReleaseBuild>,
    prepared: &Prepared,
    env: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, std::path::PathBuf>,
    path: &str,
) -> Result<(), SourceError> {
    let promises = Promises { component, row };
    let experiment = env.get("GOEXPERIMENT").filter(|e| !e.is_empty());
    let no_cgo = BTreeMap::new();
    let cgo_rules = row.map_or(&no_cgo, |r| &r.cgo);
    let wants_build_info =
        !prepared.tags.is_empty() || !cgo_rules.is_empty() || experiment.is_some();
    if wants_build_info {
        for (binary, file) in outputs {
            let Some(settings) = build_settings(file, path) else {
                return Err(promises.broken(
                    binary,
                    "Go build info",
                    "a Go binary with build info".into(),
                    "nothing `go version -m` can read".into(),
                ));
            };
            let checks = [
                lacking_tags(&prepared.tags, &settings),
                cgo_mismatch(cgo_rules, binary, &settings),
                experiment_mismatch(experiment.map(String::as_str), &settings),
            ];
            if let Some((what, promised, found)) = checks.into_iter().flatten().next() {
                return Err(promises.broken(binary, what, promised, found));
            }
        }
    }
    self_reports(&promises, outputs, path)
}

/// What a release row (or the recipe's environment) promises of a component's binaries.
struct Promises<'a> {
    component: &'a str,
    row: Option<&'a ReleaseBuild>,
}

impl Promises<'_> {
    /// The error of a broken promise: `what` of `binary` was to be `promised`, is `found`.
    fn broken(&self, binary: &str, what: &str, promised: String, found: String) -> SourceError {
        SourceError::BrokenPromise {
            component: self.component.to_owned(),
            binary: binary.to_owned(),
            what: what.to_owned(),
            promised,
            found,
            row: self.row.map_or_else(
                || "the recipe's environment".to_owned(),
                |r| r.source.clone(),
            ),
        }
    }
}

/// A build-info mismatch: what, what was promised, what was found.
type Mismatch = (&'static str, String, String);

/// The kept build tags missing from the binary's `-tags`.
fn lacking_tags(kept: &[String], settings: &BTreeMap<String, String>) -> Option<Mismatch> {
    let tags: Vec<&str> = settings
        .get("-tags")
        .map(|t| t.split(',').collect())
        .unwrap_or_default();
    let lacking: Vec<&str> = kept
        .iter()
        .map(String::as_str)
        .filter(|t| !tags.contains(t))
        .collect();
    (!lacking.is_empty()).then(|| {
        (
            "build tags",
            kept.join(","),
            format!("-tags={} (lacks {})", tags.join(","), lacking.join(",")),
        )
    })
}

/// The binary's CGO_ENABLED, when the row's cgo rule (for it, or `*`) says otherwise.
fn cgo_mismatch(
    cgo_rules: &BTreeMap<String, bool>,
    binary: &str,
    settings: &BTreeMap<String, String>,
) -> Option<Mismatch> {
    let cgo = cgo_rules.get(binary).or_else(|| cgo_rules.get("*"))?;
    let want = if *cgo { "1" } else { "0" };
    let found = settings.get("CGO_ENABLED").map_or("unset", String::as_str);
    (found != want).then(|| {
        (
            "cgo",
            format!("CGO_ENABLED={want}"),
            format!("CGO_ENABLED={found}"),
        )
    })
}

/// The binary's GOEXPERIMENT, when it lacks one the environment set.
fn experiment_mismatch(
    experiment: Option<&str>,
    settings: &BTreeMap<String, String>,
) -> Option<Mismatch> {
    let exp = experiment?;
    let found = settings.get("GOEXPERIMENT").map_or("", String::as_str);
    let have: Vec<&str> = found.split(',').collect();
    exp.split(',').any(|e| !have.contains(&e)).then(|| {
        (
            "GOEXPERIMENT",
            format!("GOEXPERIMENT={exp}"),
            format!("GOEXPERIMENT={found}"),
        )
    })
}

/// Run each self-report of the row (`kubelet --version`, …) and check its output contains
/// what the row says.
fn self_reports(
    promises: &Promises<'_>,
    outputs: &BTreeMap<String, std::path::PathBuf>,
    path: &str,
) -> Result<(), SourceError> {
    for report in promises.row.iter().flat_map(|r| &r.reports) {
        let Some(file) = outputs.get(&report.binary) else {
            continue;
        };
        let out = Command::new(file)
            .args(&report.args)
            .env_clear()
            .env("PATH", path)
            .output();
        let text = match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("cannot run it: {e}"),
        };
        if !text.contains(&report.contains) {
            return Err(promises.broken(
                &report.binary,
                &format!("`{} {}`", report.binary, report.args.join(" ")),
                format!("output containing {:?}", report.contains),
                text.trim().lines().collect::<Vec<_>>().join(" | "),
            ));
        }
    }
    Ok(())
}
