//! `kbin gen cluster --diff`: what a re-run would change, file by file and node by node, and
//! the version rule behind each change (with the rule's upstream source), so the version table
//! reads as the operator's upgrade notes.
//!
//! The run is the real one, staged in full ([`Staged`]) but never committed: what would be
//! written is compared with what is there, and the staged files are dropped. Node tarballs and
//! shared binaries bundles are not made (they pack the trees and binaries compared here).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::r#gen::plan::versions::{Knob, Record, Rule};
use crate::r#gen::{Staged, WriteError, at};

/// What happens to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A new file.
    Added,
    /// A file the re-run no longer makes (inside a node tree it replaces whole).
    Removed,
    /// Other content (or mode).
    Changed,
}

/// A version rule whose row differs between the tree's versions and the new ones.
#[derive(Debug, Clone, Serialize)]
pub struct RuleChange {
    /// The knob, as the table names it.
    pub knob: &'static str,
    /// The component whose version decides.
    pub component: &'static str,
    /// The value the tree has, if it recorded its versions.
    pub from: Option<String>,
    /// The value a re-run writes.
    pub to: String,
    /// The versions the new row covers (`>= 2.1`).
    pub range: String,
    /// Where upstream says so.
    pub source: &'static str,
}

/// A component (or Kubernetes binary) whose version differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    /// The component or binary.
    pub component: String,
    /// The tree's version (none: the tree did not record it).
    pub from: Option<String>,
    /// The new version.
    pub to: String,
}

/// One file a re-run would change.
#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    /// The path under the output directory.
    pub path: String,
    /// The node whose tree holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Added, removed or changed.
    pub kind: Kind,
    /// The mode change, if any (`0644 → 0755`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Why no line diff is shown: `secret`, `binary`, `certificate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<&'static str>,
    /// A unified diff of the text (not for secrets, certificates or binaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The version rules behind the change.
    pub rules: Vec<RuleChange>,
    /// The version changes the change shows (the file names the versions, or is the binary).
    pub versions: Vec<VersionChange>,
}

/// Everything a re-run would change.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The output directory.
    pub out: PathBuf,
    /// Component versions that differ from the tree's record.
    pub versions: Vec<VersionChange>,
    /// Rules whose row differs.
    pub rules: Vec<RuleChange>,
    /// The files, sorted by path.
    pub files: Vec<FileChange>,
}

impl Plan {
    /// Nothing would change.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The text form: nothing at all when nothing would change.
    pub fn text(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut s = String::new();
        if !self.versions.is_empty() {
            s += &format!("versions: {}\n", grouped(&self.versions));
        }
        let mut group: Option<Option<&str>> = None;
        for f in &self.files {
            if group != Some(f.node.as_deref()) {
                group = Some(f.node.as_deref());
                match f.node.as_deref() {
                    Some(n) => s += &format!("\nnode {n}:\n"),
                    None => s += &format!("\n{}:\n", self.out.display()),
                }
            }
            let sign = match f.kind {
                Kind::Added => '+',
                Kind::Removed => '-',
                Kind::Changed => '~',
            };
            let shown = match &f.node {
                Some(n) => f
                    .path
                    .strip_prefix(&format!("nodes/{n}"))
                    .unwrap_or(&f.path),
                None => f.path.as_str(),
            };
            s += &format!("  {sign} {shown}");
            if let Some(m) = &f.mode {
                s += &format!(" (mode {m})");
            }
            if let Some(o) = f.opaque {
                s += &format!(" ({o}: content not shown)");
            }
            s += "\n";
            for r in &f.rules {
                s += &format!(
                    "      rule: {}: {} → {} ({} {}; {})\n",
                    r.knob,
                    r.from.as_deref().unwrap_or("?"),
                    r.to,
                    r.component,
                    r.range,
                    r.source
                );
            }
            if !f.versions.is_empty() {
                s += &format!("      versions: {}\n", grouped(&f.versions));
            }
            if f.rules.is_empty() && f.versions.is_empty() && f.kind == Kind::Changed {
                s +=
                    "      (no version rule or version behind it: the spec, or kbin's templates)\n";
            }
            if let Some(d) = &f.diff {
                for line in d.lines() {
                    s += &format!("      {line}\n");
                }
            }
        }
        s
    }
}

/// `kube-apiserver, kubelet 1.35.8 → 1.36.4; etcd 3.6.10 → 3.6.14`: components that move
/// together are named together.
fn grouped(changes: &[VersionChange]) -> String {
    let mut groups: Vec<(&Option<String>, &String, Vec<&str>)> = Vec::new();
    for v in changes {
        match groups
            .iter_mut()
            .find(|(f, t, _)| *f == &v.from && *t == &v.to)
        {
            Some((_, _, names)) => names.push(&v.component),
            None => groups.push((&v.from, &v.to, vec![&v.component])),
        }
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(from, to, names)| match from {
            Some(from) => format!("{} {from} → {to}", names.join(", ")),
            None => format!("{} → {to}", names.join(", ")),
        })
        .collect();
    parts.join("; ")
}

/// Compare what `staged` holds (a full run, not committed) with the tree in `out`. `old` is
/// the tree's version record, `new` the versions the run was pinned to (none for `--pki-only`).
pub fn plan(
    out: &Path,
    staged: &Staged,
    old: Option<&Record>,
    new: Option<&Record>,
) -> Result<Plan, WriteError> {
    let (files, trees) = staged.pending();
    let versions = version_changes(old, new);
    let rules = rule_changes(old, new);
    let ctx = Attribution {
        versions: &versions,
        rules: &rules,
    };
    let mut changes = Vec::new();
    for (path, temp) in files {
        let now = read_opt(&path)?;
        let then = std::fs::read(&temp).map_err(at("cannot read", &temp))?;
        let mode = std::fs::metadata(&temp)
            .map_err(at("cannot stat", &temp))?
            .mode();
        if let Some(c) = compare(out, &path, now.as_deref(), Some(&then), mode, &ctx)? {
            changes.push(c);
        }
    }
    for (dir, built) in trees {
        let mut rels: Vec<PathBuf> = crate::fsx::files_under(&built)?;
        if dir.is_dir() {
            rels.extend(crate::fsx::files_under(&dir)?);
        }
        rels.sort();
        rels.dedup();
        for rel in rels {
            let (old_path, new_path) = (dir.join(&rel), built.join(&rel));
            let new_meta = std::fs::symlink_metadata(&new_path).ok();
            let old_meta = std::fs::symlink_metadata(&old_path).ok();
            // Binaries are hard links into the store: the same inode is the same file, and
            // hundreds of MB need not be read.
            if let (Some(a), Some(b)) = (&old_meta, &new_meta)
                && a.dev() == b.dev()
                && a.ino() == b.ino()
            {
                continue;
            }
            let now = read_opt(&old_path)?;
            let then = read_opt(&new_path)?;
            let mode = new_meta.map_or(0, |m| m.mode());
            if let Some(c) = compare(out, &old_path, now.as_deref(), then.as_deref(), mode, &ctx)? {
                changes.push(c);
            }
        }
    }
    changes.sort_by(|a, b| (&a.node, &a.path).cmp(&(&b.node, &b.path)));
    Ok(Plan {
        out: out.to_owned(),
        versions,
        rules: rules.into_iter().map(|(_, r)| r).collect(),
        files: changes,
    })
}

struct Attribution<'a> {
    versions: &'a [VersionChange],
    rules: &'a [(Knob, RuleChange)],
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, WriteError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at("cannot read", path)(e)),
    }
}

/// The change from `now` (the tree's file at `old_path`; none: absent) to `then` (what the run
/// staged, with `new_mode`; none: removed), if any.
fn compare(
    out: &Path,
    old_path: &Path,
    now: Option<&[u8]>,
    then: Option<&[u8]>,
    new_mode: u32,
    ctx: &Attribution,
) -> Result<Option<FileChange>, WriteError> {
    let old_mode = match now {
        Some(_) => std::fs::metadata(old_path)
            .map_err(at("cannot stat", old_path))?
            .mode(),
        None => 0,
    };
    let kind = match (now, then) {
        (None, None) => return Ok(None),
        (None, Some(_)) => Kind::Added,
        (Some(_), None) => Kind::Removed,
        (Some(a), Some(b)) if a == b && old_mode & 0o7777 == new_mode & 0o7777 => return Ok(None),
        (Some(_), Some(_)) => Kind::Changed,
    };
    let mode = (kind == Kind::Changed && old_mode & 0o7777 != new_mode & 0o7777)
        .then(|| format!("{:04o} → {:04o}", old_mode & 0o7777, new_mode & 0o7777));
    let rel = old_path
        .strip_prefix(out)
        .unwrap_or(old_path)
        .to_string_lossy()
        .into_owned();
    let node = rel
        .strip_prefix("nodes/")
        .and_then(|r| r.split_once('/'))
        .map(|(n, _)| n.to_owned());
    // The key a knob names its files by: the node path, or the path in the tree.
    let key = match &node {
        Some(n) => rel
            .strip_prefix(&format!("nodes/{n}"))
            .unwrap_or(&rel)
            .to_owned(),
        None => rel.clone(),
    };
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let (a, b) = (text(now), text(then));
    let (opaque, is_binary) = opacity(&key, (now, then), (&a, &b), (old_mode, new_mode));
    let diff = match (opaque, kind) {
        (None, Kind::Changed) => Some(unified(a.as_deref(), b.as_deref())),
        _ => None,
    };
    let rules = if kind == Kind::Changed {
        ctx.rules
            .iter()
            .filter(|(k, _)| knob_files(*k).contains(&key))
            .map(|(_, r)| r.clone())
            .collect()
    } else {
        Vec::new()
    };
    let versions = match kind {
        Kind::Changed => attributed_versions(ctx, &key, is_binary, &a, &b),
        _ => Vec::new(),
    };
    Ok(Some(FileChange {
        path: rel,
        node,
        kind,
        mode,
        opaque,
        diff,
        rules,
        versions,
    }))
}

/// Whether a file's change is shown as text or named only ("secret": a 0600-style mode;
/// "binary": a toolchain binary or bytes with a NUL; "certificate": PEM), and whether it is a
/// binary.
fn opacity(
    key: &str,
    (now, then): (Option<&[u8]>, Option<&[u8]>),
    (a, b): (&Option<String>, &Option<String>),
    (old_mode, new_mode): (u32, u32),
) -> (Option<&'static str>, bool) {
    let secret_mode = |m: u32| m != 0 && m & 0o077 == 0;
    // Toolchain binaries (or stand-in scripts for them) go to the bin directories.
    let in_bin_dir = [
        crate::r#gen::node::configs::paths::BIN,
        crate::r#gen::node::configs::paths::CNI_BIN,
    ]
    .iter()
    .any(|d| key.starts_with(&format!("{d}/")));
    let is_binary = in_bin_dir || now.into_iter().chain(then).any(|b| b.contains(&0));
    let is_pem = [a, b]
        .into_iter()
        .flatten()
        .any(|t| t.contains("-----BEGIN"));
    let opaque = if secret_mode(new_mode) || secret_mode(old_mode) {
        Some("secret")
    } else if is_binary {
        Some("binary")
    } else if is_pem {
        Some("certificate")
    } else {
        None
    };
    (opaque, is_binary)
}

/// The version changes a changed file shows: those whose old version it named and whose new one
/// it names (or the binary of that name), narrowed to the component its path names, if any.
fn attributed_versions(
    ctx: &Attribution,
    key: &str,
    is_binary: bool,
    a: &Option<String>,
    b: &Option<String>,
) -> Vec<VersionChange> {
    let file_name = Path::new(key).file_name().and_then(|n| n.to_str());
    let versions: Vec<VersionChange> = ctx
        .versions
        .iter()
        .filter(|v| {
            let named = |t: &Option<String>, ver: Option<&String>| {
                ver.is_some_and(|ver| t.as_deref().is_some_and(|t| t.contains(ver.as_str())))
            };
            (is_binary && file_name == Some(v.component.as_str()))
                || (!is_binary && named(a, v.from.as_ref()) && named(b, Some(&v.to)))
        })
        .cloned()
        .collect();
    // The Kubernetes binaries share one version: a file whose path names a component
    // (`kube-apiserver.service`, `/etc/containerd/…`) is that component's.
    let own: Vec<VersionChange> = versions
        .iter()
        .filter(|v| key.contains(v.component.as_str()))
        .cloned()
        .collect();
    if own.is_empty() || key == "versions.toml" {
        versions
    } else {
        own
    }
}

/// A unified diff with three lines of context.
fn unified(a: Option<&str>, b: Option<&str>) -> String {
    let (a, b) = (a.unwrap_or(""), b.unwrap_or(""));
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(2)
        .to_string()
}

fn version_changes(old: Option<&Record>, new: Option<&Record>) -> Vec<VersionChange> {
    let Some(new) = new else { return Vec::new() };
    let all = |r: &Record| -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = r
            .components
            .iter()
            .map(|(c, v)| (c.clone(), v.to_string()))
            .collect();
        m.insert("kubernetes".into(), r.kubernetes.to_string());
        m.insert("pause image".into(), r.images.pause.clone());
        m.insert("coredns image".into(), r.images.coredns.clone());
        m
    };
    let before = old.map(all).unwrap_or_default();
    all(new)
        .into_iter()
        .filter(|(c, v)| before.get(c) != Some(v))
        .map(|(c, v)| VersionChange {
            from: before.get(&c).cloned(),
            component: c,
            to: v,
        })
        .collect()
}

/// The rows that differ between the tree's versions and the new ones (every new row when the
/// tree recorded none).
fn rule_changes(old: Option<&Record>, new: Option<&Record>) -> Vec<(Knob, RuleChange)> {
    let Some(new) = new.and_then(|n| n.decide().ok()) else {
        return Vec::new();
    };
    let old = old.and_then(|o| o.decide().ok());
    let mut out = Vec::new();
    for r in new.rules() {
        let was: Option<&Rule> = old
            .as_ref()
            .and_then(|o| o.rules().find(|x| x.knob == r.knob));
        if was.is_some_and(|w| w.value == r.value) {
            continue;
        }
        out.push((
            r.knob,
            RuleChange {
                knob: r.knob.name(),
                component: r.component,
                from: was.map(|w| w.value.describe()),
                to: r.value.describe(),
                range: r.range(),
                source: r.source,
            },
        ));
    }
    out
}

/// The files this knob's value shows in: a node path (`/etc/containerd/config.toml`) or
/// a file of the tree (`NEXT-STEPS.md`). `gen --diff` names a changed rule beside the files
/// it changes (tests/testsuite/gen_diff.rs checks, across every minor, that each changed row lands on a
/// file that changed). It lives here, not in the version table, so that `plan` never reads
/// `node`'s paths.
fn knob_files(knob: Knob) -> Vec<String> {
    use crate::r#gen::node::configs::paths;
    let one = |p: &str| vec![p.to_owned()];
    match knob {
        Knob::ContainerdConfigVersion
        | Knob::ContainerdCriRuntimePlugin
        | Knob::ContainerdSandboxImage
        | Knob::ContainerdCniBinDir => one(paths::CONTAINERD_CONFIG),
        Knob::KubeletRuntimeEndpoint => {
            vec![paths::KUBELET_CONFIG.to_owned(), paths::unit("kubelet")]
        }
        Knob::KubeletCgroupV1 => vec![paths::KUBELET_CONFIG.to_owned(), "NEXT-STEPS.md".into()],
        Knob::KubeletConfigApi => one(paths::KUBELET_CONFIG),
        Knob::SchedulerConfigApi => one(paths::SCHEDULER_CONFIG),
        Knob::KubeProxyConfigApi | Knob::KubeProxyNodePortAddresses => {
            one(paths::KUBE_PROXY_CONFIG)
        }
        Knob::EncryptionConfigApi => one(paths::ENCRYPTION_CONFIG),
        Knob::EtcdLoggerFlags | Knob::EtcdCorruptCheckFlag | Knob::EtcdSnapshotCount => {
            vec![paths::unit("etcd")]
        }
        Knob::CniSpecVersion => one(paths::CNI_CONFLIST),
        Knob::EtcdctlApiEnv => one("NEXT-STEPS.md"),
        Knob::EtcdSnapshotTool => vec![
            paths::ETCD_BACKUP.to_owned(),
            paths::ETCD_RESTORE.to_owned(),
        ],
    }
}
