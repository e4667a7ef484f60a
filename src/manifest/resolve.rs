//! Resolution: a requested Kubernetes version (`1.30`, `v1.30.4`, `latest`) plus per-component
//! overrides (`--with etcd=3.5.16`) to a coherent set of component versions, with the skew rules
//! checked.

use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde::Serialize;

use super::{Images, KUBERNETES, Manifest, Minor, Release};

/// Why a version could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not `latest`, `1.NN` or `1.NN.P`.
    #[error("{0:?} is not a Kubernetes version: use 1.30, 1.30.4, v1.30.4 or latest")]
    BadVersion(String),
    /// A version the manifest does not know.
    #[error("Kubernetes {requested} is not a release kbin knows; nearest known: {nearest}")]
    Unknown {
        /// What was asked for.
        requested: String,
        /// The nearest known versions, comma-separated.
        nearest: String,
    },
    /// A minor that is known but has no defaults.
    #[error(
        "Kubernetes {minor} has no component defaults in the manifest ({why}); the newest minor \
         with defaults is {latest}"
    )]
    Incomplete {
        /// The minor.
        minor: Minor,
        /// Why (from the manifest).
        why: String,
        /// The newest complete minor.
        latest: String,
        /// Components still missing a version.
        missing: Vec<String>,
    },
    /// `--with` not of the form `NAME=VERSION`.
    #[error("--with {0:?} is not NAME=VERSION (for example --with etcd=3.5.16)")]
    BadOverride(String),
    /// `--with` names something that is not a component or a Kubernetes binary.
    #[error("--with names {name:?}, which is not a component; components: {known}")]
    UnknownComponent {
        /// What was named.
        name: String,
        /// The names that are accepted.
        known: String,
    },
    /// The same name given twice.
    #[error("--with gives {0} twice")]
    DuplicateOverride(String),
    /// A skew rule is violated.
    #[error("version skew: {0}")]
    Skew(String),
    /// The manifest does not say what this version of a component ships.
    #[error(
        "the manifest does not say which binaries {component} {version} ships: its \
         [[component.ships]] rows cover {ranges}"
    )]
    NotShipped {
        /// The component.
        component: String,
        /// The version asked for.
        version: Version,
        /// The ranges the rows cover.
        ranges: String,
    },
    /// A `--with` moves a Kubernetes binary to a version that does not ship it.
    #[error("{component} {version} does not ship {binary}")]
    BinaryNotShipped {
        /// The component.
        component: String,
        /// The version asked for.
        version: Version,
        /// The binary.
        binary: String,
    },
}

impl ResolveError {
    /// The next step to suggest, if any.
    pub fn hint(&self) -> Option<String> {
        match self {
            ResolveError::BadVersion(_) | ResolveError::Unknown { .. } => Some(
                "`kbin show-versions --available` lists the versions kbin knows; for a newer \
                 release, use an updated manifest with --manifest FILE"
                    .to_string(),
            ),
            ResolveError::Incomplete {
                missing, latest, ..
            } => Some(format!(
                "install {latest} instead, or give every component's version: {}",
                missing
                    .iter()
                    .map(|m| format!("--with {m}=X.Y.Z"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            ResolveError::Skew(_) => {
                Some("pass --allow-skew to install this combination anyway".to_string())
            }
            ResolveError::NotShipped { component, .. } => Some(format!(
                "add a [[component.ships]] row for that version to {component}'s table in a \
                 manifest of your own (--manifest FILE), or pick a version the rows cover"
            )),
            ResolveError::BadOverride(_)
            | ResolveError::UnknownComponent { .. }
            | ResolveError::DuplicateOverride(_)
            | ResolveError::BinaryNotShipped { .. } => None,
        }
    }
}

/// One `--with NAME=VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// A component (`etcd`) or a Kubernetes binary (`kubelet`).
    pub name: String,
    /// The version wanted.
    pub version: Version,
}

impl FromStr for Override {
    type Err = ResolveError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ResolveError::BadOverride(s.to_owned());
        let (name, v) = s.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        let v = v.trim();
        if name.is_empty() || v.is_empty() {
            return Err(bad());
        }
        let version = Version::parse(v.strip_prefix('v').unwrap_or(v)).map_err(|_| bad())?;
        Ok(Override {
            name: name.to_owned(),
            version,
        })
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `1.30`, `1.30.4`, `v1.30.4` or `latest`.
    pub version: String,
    /// `--with` overrides.
    pub overrides: Vec<Override>,
    /// Turn skew violations into warnings.
    pub allow_skew: bool,
}

/// Where a selected version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The Kubernetes version itself.
    Requested,
    /// The minor's default.
    Default,
    /// A `--with` override.
    Override,
}

/// A component at a version, providing some of its binaries.
///
/// A component appears more than once when `--with` moves some of its binaries to another
/// version (`--with kubelet=1.29.15` splits kubernetes in two).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selected {
    /// The component.
    pub component: String,
    /// Its version.
    pub version: Version,
    /// The binaries taken at this version.
    pub binaries: Vec<String>,
    /// Why this version.
    pub reason: Reason,
}

/// A coherent set of versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The Kubernetes (API server) version.
    pub kubernetes: Version,
    /// Its minor.
    pub minor: Minor,
    /// Every component, in manifest order.
    pub components: Vec<Selected>,
    /// Images the configs refer to (none when the minor has no defaults).
    pub images: Option<Images>,
    /// Skew violations let through by `--allow-skew`.
    pub warnings: Vec<String>,
}

impl Resolution {
    /// The version of `component` (its first selection).
    pub fn version_of(&self, component: &str) -> Option<&Version> {
        self.components
            .iter()
            .find(|s| s.component == component)
            .map(|s| &s.version)
    }

    /// The version at which `binary` is taken.
    pub fn version_of_binary(&self, binary: &str) -> Option<&Version> {
        self.components
            .iter()
            .find(|s| s.binaries.iter().any(|b| b == binary))
            .map(|s| &s.version)
    }
}

/// The skew policy of the Kubernetes binaries against the API server, in minors:
/// (binary, oldest allowed offset, newest allowed offset).
/// Source: <https://kubernetes.io/releases/version-skew-policy/>.
pub const KUBE_SKEW: &[(&str, i64, i64)] = &[
    ("kubelet", -3, 0),
    ("kube-proxy", -3, 0),
    ("kube-controller-manager", -1, 0),
    ("kube-scheduler", -1, 0),
    ("kubectl", -1, 1),
    ("kubeadm", 0, 1),
];

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.components {
            writeln!(
                f,
                "{:<12} {:<10} {}",
                s.component,
                s.version,
                s.binaries.join(" ")
            )?;
        }
        Ok(())
    }
}

/// Parse the requested Kubernetes version against the manifest.
fn kubernetes_version<'m>(
    m: &'m Manifest,
    requested: &str,
) -> Result<(Version, &'m Release), ResolveError> {
    let req = requested.trim();
    if req == "latest" {
        let r = m
            .latest_complete()
            .ok_or_else(|| ResolveError::BadVersion(requested.to_owned()))?;
        return Ok((r.latest.clone(), r));
    }
    let t = req.strip_prefix('v').unwrap_or(req);
    if let Ok(minor) = t.parse::<Minor>() {
        let r = m
            .releases
            .get(&minor)
            .ok_or_else(|| unknown_minor(m, requested, minor))?;
        return Ok((r.latest.clone(), r));
    }
    let v = Version::parse(t).map_err(|_| ResolveError::BadVersion(requested.to_owned()))?;
    if !v.pre.is_empty() || !v.build.is_empty() {
        return Err(ResolveError::BadVersion(requested.to_owned()));
    }
    let minor = Minor::of(&v);
    let r = m
        .releases
        .get(&minor)
        .ok_or_else(|| unknown_minor(m, requested, minor))?;
    if !r.patches.contains(&v) {
        let mut near: Vec<&Version> = r.patches.iter().collect();
        near.sort_by_key(|p| (p.patch as i64 - v.patch as i64).abs());
        let mut near: Vec<&Version> = near.into_iter().take(3).collect();
        near.sort();
        return Err(ResolveError::Unknown {
            requested: requested.to_owned(),
            nearest: format!(
                "{} (kbin knows {} to {})",
                join(near),
                r.patches[0],
                r.latest
            ),
        });
    }
    Ok((v, r))
}

fn unknown_minor(m: &Manifest, requested: &str, minor: Minor) -> ResolveError {
    let mut near: Vec<&Release> = m.releases.values().collect();
    near.sort_by_key(|r| r.minor.distance(minor).abs());
    let mut near: Vec<Minor> = near.into_iter().take(3).map(|r| r.minor).collect();
    near.sort();
    let first = m
        .releases
        .keys()
        .next()
        .map(|k| k.to_string())
        .unwrap_or_default();
    let last = m
        .releases
        .keys()
        .last()
        .map(|k| k.to_string())
        .unwrap_or_default();
    ResolveError::Unknown {
        requested: requested.to_owned(),
        nearest: format!("{} (kbin knows {first} to {last})", join(near)),
    }
}

fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolve `request` against `manifest`.
pub fn resolve(manifest: &Manifest, request: &Request) -> Result<Resolution, ResolveError> {
    let (kube, release) = kubernetes_version(manifest, &request.version)?;
    let binary_overrides = check_overrides(manifest, request)?;
    let override_of = |name: &str| request.overrides.iter().find(|o| o.name == name);
    let defaults = match &release.defaults {
        Ok(d) => Some(d),
        Err(why) => {
            let missing: Vec<String> = manifest
                .components
                .iter()
                .filter(|c| c.name != KUBERNETES && override_of(&c.name).is_none())
                .map(|c| c.name.clone())
                .collect();
            if !missing.is_empty() {
                return Err(ResolveError::Incomplete {
                    minor: release.minor,
                    why: why.clone(),
                    latest: manifest
                        .latest_complete()
                        .map(|r| r.minor.to_string())
                        .unwrap_or_default(),
                    missing,
                });
            }
            None
        }
    };
    let mut components = Vec::new();
    for c in &manifest.components {
        if c.name == KUBERNETES {
            components.extend(kubernetes_selections(c, &kube, &binary_overrides)?);
            continue;
        }
        let (version, reason) = match override_of(&c.name) {
            Some(o) => (o.version.clone(), Reason::Override),
            None => match defaults.and_then(|d| d.components.get(&c.name)) {
                Some(v) => (v.clone(), Reason::Default),
                // A component the manifest defines but has no default for (validation makes
                // this impossible for complete minors; incomplete minors returned above).
                None => continue,
            },
        };
        components.push(Selected {
            component: c.name.clone(),
            binaries: shipped(c, &version)?,
            version,
            reason,
        });
    }
    let mut resolution = Resolution {
        minor: Minor::of(&kube),
        kubernetes: kube,
        components,
        images: defaults.map(|d| d.images.clone()),
        warnings: Vec::new(),
    };
    let violations = check_skew(manifest, &resolution);
    if !violations.is_empty() {
        if request.allow_skew {
            resolution.warnings = violations;
        } else {
            return Err(ResolveError::Skew(violations.join("; ")));
        }
    }
    Ok(resolution)
}

/// The overrides' names, checked before anything else: each once, each a component or a
/// Kubernetes binary other than kube-apiserver (whose version is the request's). Returns the
/// overrides of Kubernetes binaries.
fn check_overrides<'r>(
    manifest: &Manifest,
    request: &'r Request,
) -> Result<Vec<&'r Override>, ResolveError> {
    let kube_component = manifest
        .component(KUBERNETES)
        .expect("a validated manifest defines kubernetes");
    let mut seen = Vec::new();
    let mut binary_overrides = Vec::new();
    for o in &request.overrides {
        if seen.contains(&o.name) {
            return Err(ResolveError::DuplicateOverride(o.name.clone()));
        }
        seen.push(o.name.clone());
        if o.name == KUBERNETES {
            return Err(ResolveError::UnknownComponent {
                name: o.name.clone(),
                known: "the Kubernetes version is the first argument (kbin install 1.30.4), not a --with".into(),
            });
        }
        let is_kube_binary =
            kube_component.binaries.contains(&o.name) && o.name != "kube-apiserver";
        if is_kube_binary {
            binary_overrides.push(o);
        } else if manifest.component(&o.name).is_none() {
            let known: Vec<String> = manifest
                .components
                .iter()
                .filter(|c| c.name != KUBERNETES)
                .map(|c| c.name.clone())
                .chain(
                    kube_component
                        .binaries
                        .iter()
                        .filter(|b| *b != "kube-apiserver")
                        .cloned(),
                )
                .collect();
            return Err(ResolveError::UnknownComponent {
                name: o.name.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(binary_overrides)
}

/// The binaries a version ships, from the component's [[component.ships]] rows.
fn shipped(c: &super::Component, v: &Version) -> Result<Vec<String>, ResolveError> {
    c.shipped(v)
        .map(|s| s.required)
        .ok_or_else(|| ResolveError::NotShipped {
            component: c.name.clone(),
            version: v.clone(),
            ranges: c.ships_ranges(),
        })
}

/// Kubernetes at the requested version, less the binaries overridden, then one selection per
/// overridden binary at its own version.
fn kubernetes_selections(
    c: &super::Component,
    kube: &Version,
    binary_overrides: &[&Override],
) -> Result<Vec<Selected>, ResolveError> {
    let moved: Vec<&str> = binary_overrides.iter().map(|o| o.name.as_str()).collect();
    let mut out = vec![Selected {
        component: c.name.clone(),
        version: kube.clone(),
        binaries: shipped(c, kube)?
            .into_iter()
            .filter(|b| !moved.contains(&b.as_str()))
            .collect(),
        reason: Reason::Requested,
    }];
    for o in binary_overrides {
        if !shipped(c, &o.version)?.contains(&o.name) {
            return Err(ResolveError::BinaryNotShipped {
                component: c.name.clone(),
                version: o.version.clone(),
                binary: o.name.clone(),
            });
        }
        out.push(Selected {
            component: c.name.clone(),
            version: o.version.clone(),
            binaries: vec![o.name.clone()],
            reason: Reason::Override,
        });
    }
    Ok(out)
}

/// Every skew rule the resolution breaks, as sentences.
pub fn check_skew(manifest: &Manifest, r: &Resolution) -> Vec<String> {
    let mut out = Vec::new();
    let api = Minor::of(&r.kubernetes);
    for (binary, oldest, newest) in KUBE_SKEW {
        if let Some(v) = r.version_of_binary(binary) {
            let d = Minor::of(v).distance(api);
            if d < *oldest || d > *newest {
                let allowed = match (*oldest, *newest) {
                    (0, 0) => "the same minor as".to_string(),
                    (o, 0) => format!("at most {} minors older than, and never newer than,", -o),
                    (0, n) => format!("the same minor as, or at most {n} newer than,"),
                    (o, n) => format!("within {} older and {n} newer minors of", -o),
                };
                out.push(format!(
                    "{binary} {v} must be {allowed} kube-apiserver {}",
                    r.kubernetes
                ));
            }
        }
    }
    for rule in &manifest.rules {
        if !rule.kubernetes.matches(&r.kubernetes) {
            continue;
        }
        let Ok(req) = rule.requirement(&r.kubernetes) else {
            continue;
        };
        for s in r
            .components
            .iter()
            .filter(|s| s.component == rule.component)
        {
            if !req.matches(&s.version) {
                out.push(format!(
                    "{} {} is not supported with Kubernetes {} (needs {req}: {})",
                    s.component, s.version, r.kubernetes, rule.why
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Manifest {
        Manifest::embedded().expect("embedded manifest is valid")
    }

    fn req(v: &str, with: &[&str]) -> Request {
        Request {
            version: v.into(),
            overrides: with.iter().map(|w| w.parse().unwrap()).collect(),
            allow_skew: false,
        }
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn minor_resolves_to_its_latest_patch() {
        let r = resolve(&m(), &req("1.30", &[])).unwrap();
        assert_eq!(r.kubernetes, v("1.30.14"));
        assert_eq!(r.version_of("etcd"), Some(&v("3.5.16")));
        let man = m();
        let defaults = man.releases[&"1.30".parse().unwrap()]
            .defaults
            .as_ref()
            .unwrap();
        for s in &r.components[1..] {
            assert_eq!(
                s.version, defaults.components[&s.component],
                "{}",
                s.component
            );
            assert_eq!(s.reason, Reason::Default);
        }
    }

    #[test]
    fn exact_patch_with_or_without_v() {
        for s in ["1.30.4", "v1.30.4"] {
            let r = resolve(&m(), &req(s, &[])).unwrap();
            assert_eq!(r.kubernetes, v("1.30.4"));
            assert_eq!(r.minor.to_string(), "1.30");
        }
    }

    #[test]
    fn latest_is_the_newest_minor_with_defaults() {
        let man = m();
        let r = resolve(&man, &req("latest", &[])).unwrap();
        assert_eq!(r.kubernetes, man.latest_complete().unwrap().latest);
        assert_eq!(r.kubernetes, v("1.36.4"));
    }

    #[test]
    fn unknown_patch_lists_the_nearest_known() {
        let e = resolve(&m(), &req("1.30.99", &[])).unwrap_err().to_string();
        assert!(e.contains("1.30.99"), "{e}");
        assert!(e.contains("1.30.14"), "{e}");
        assert!(e.contains("kbin knows 1.30.0 to 1.30.14"), "{e}");
    }

    #[test]
    fn unknown_minor_lists_the_nearest_minors() {
        let e = resolve(&m(), &req("1.20", &[])).unwrap_err().to_string();
        assert!(e.contains("1.28"), "{e}");
        assert!(!e.contains("1.36,"), "{e}");
        let e = resolve(&m(), &req("1.99", &[])).unwrap_err().to_string();
        assert!(e.contains("1.37"), "{e}");
    }

    #[test]
    fn garbage_versions_are_refused() {
        for s in ["", "banana", "1", "1.30.4-rc.1", "1.30.x"] {
            assert!(
                matches!(
                    resolve(&m(), &req(s, &[])),
                    Err(ResolveError::BadVersion(_))
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn a_minor_without_defaults_says_so() {
        let e = resolve(&m(), &req("1.37", &[])).unwrap_err();
        assert!(matches!(e, ResolveError::Incomplete { .. }), "{e}");
        assert!(e.to_string().contains("1.36"), "{e}");
    }

    #[test]
    fn a_minor_without_defaults_resolves_when_every_component_is_given() {
        let r = resolve(
            &m(),
            &req(
                "1.37",
                &[
                    "etcd=3.6.14",
                    "containerd=2.3.4",
                    "runc=1.4.3",
                    "cni-plugins=1.9.1",
                    "crictl=1.36.0",
                ],
            ),
        )
        .unwrap();
        assert_eq!(r.kubernetes, v("1.37.0"));
        assert!(r.images.is_none());
    }

    #[test]
    fn with_overrides_a_component() {
        let r = resolve(&m(), &req("1.30", &["etcd=v3.5.15"])).unwrap();
        let etcd = r.components.iter().find(|s| s.component == "etcd").unwrap();
        assert_eq!(etcd.version, v("3.5.15"));
        assert_eq!(etcd.reason, Reason::Override);
    }

    #[test]
    fn malformed_with_is_refused() {
        for s in ["etcd", "etcd=", "=3.5.1", "etcd=3.5", "etcd=latest"] {
            assert!(
                matches!(s.parse::<Override>(), Err(ResolveError::BadOverride(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn with_an_unknown_component_lists_the_known_ones() {
        let e = resolve(&m(), &req("1.30", &["etcdd=3.5.16"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("etcdd"), "{e}");
        assert!(e.contains("containerd") && e.contains("kubelet"), "{e}");
    }

    #[test]
    fn with_the_same_name_twice_is_refused() {
        let e = resolve(&m(), &req("1.30", &["etcd=3.5.16", "etcd=3.5.15"])).unwrap_err();
        assert!(matches!(e, ResolveError::DuplicateOverride(_)));
    }

    #[test]
    fn kubelet_newer_than_the_apiserver_is_skew() {
        let e = resolve(&m(), &req("1.30", &["kubelet=1.31.0"])).unwrap_err();
        assert!(matches!(e, ResolveError::Skew(_)), "{e}");
        assert!(e.to_string().contains("kubelet 1.31.0"), "{e}");
    }

    #[test]
    fn kubelet_three_minors_older_is_fine_four_is_not() {
        let r = resolve(&m(), &req("1.33", &["kubelet=1.30.14"])).unwrap();
        assert_eq!(r.version_of_binary("kubelet"), Some(&v("1.30.14")));
        assert_eq!(r.version_of_binary("kube-apiserver"), Some(&v("1.33.11")));
        let kube = r
            .components
            .iter()
            .find(|s| s.component == "kubernetes")
            .unwrap();
        assert!(!kube.binaries.contains(&"kubelet".to_string()));
        assert!(resolve(&m(), &req("1.33", &["kubelet=1.29.15"])).is_err());
    }

    #[test]
    fn kubectl_may_be_one_minor_newer() {
        assert!(resolve(&m(), &req("1.30", &["kubectl=1.31.0"])).is_ok());
        assert!(resolve(&m(), &req("1.30", &["kubectl=1.32.0"])).is_err());
    }

    #[test]
    fn etcd_outside_the_supported_range_is_skew() {
        let e = resolve(&m(), &req("1.30", &["etcd=3.6.14"])).unwrap_err();
        assert!(matches!(e, ResolveError::Skew(_)), "{e}");
        assert!(e.to_string().contains("etcd 3.6.14"), "{e}");
        assert!(resolve(&m(), &req("1.35", &["etcd=3.6.14"])).is_ok());
    }

    #[test]
    fn containerd_1x_is_skew_from_1_36() {
        assert!(resolve(&m(), &req("1.36", &["containerd=1.7.22"])).is_err());
        assert!(resolve(&m(), &req("1.35", &["containerd=1.7.22"])).is_ok());
    }

    #[test]
    fn allow_skew_turns_violations_into_warnings() {
        let mut r = req("1.30", &["etcd=3.6.14", "kubelet=1.31.0"]);
        r.allow_skew = true;
        let res = resolve(&m(), &r).unwrap();
        assert_eq!(res.warnings.len(), 2, "{:?}", res.warnings);
    }

    #[test]
    fn etcd_3_4_resolves_without_etcdutl() {
        let mut r = req("1.30", &["etcd=3.4.23"]);
        r.allow_skew = true;
        let r = resolve(&m(), &r).unwrap();
        let etcd = r.components.iter().find(|s| s.component == "etcd").unwrap();
        assert_eq!(etcd.binaries, ["etcd", "etcdctl"]);
        let r = resolve(&m(), &req("1.30", &[])).unwrap();
        let etcd = r.components.iter().find(|s| s.component == "etcd").unwrap();
        assert_eq!(etcd.binaries, ["etcd", "etcdctl", "etcdutl"]);
    }

    #[test]
    fn a_version_no_ships_row_covers_is_one_clear_error() {
        let mut r = req("1.30", &["etcd=3.3.0"]);
        r.allow_skew = true;
        let e = resolve(&m(), &r).unwrap_err();
        assert!(matches!(e, ResolveError::NotShipped { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("etcd 3.3.0") && msg.contains(">=3.4.0, <3.5.0"),
            "{msg}"
        );
    }

    #[test]
    fn every_known_minor_resolves_with_its_defaults_and_no_skew() {
        let man = m();
        for (minor, rel) in &man.releases {
            if rel.defaults.is_err() {
                continue;
            }
            let r = resolve(&man, &req(&minor.to_string(), &[]))
                .unwrap_or_else(|e| panic!("{minor}: {e}"));
            assert!(r.warnings.is_empty());
            assert_eq!(r.components.len(), man.components.len());
        }
    }
}
