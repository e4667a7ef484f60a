//! Does a source build reproduce upstream's release binary, and itself?
//!
//! [`upstream_build`] reads how upstream builds a release: the Go version from the source tree
//! (`.go-version`, or the file the release row names) and the `go build` settings from the
//! recipe's release row (`ldflags`, `tags`, `cgo`, `flags`). [`against_upstream`] compares one
//! built binary with that: when kbin used the same Go and the binary's own build info (`go
//! version -m`) shows the same settings, its digest is compared with the official digest of the
//! same version and arch (the manifest's pin of the binary, or of the archive that holds it when
//! that archive is in the store); otherwise it says why the two are not comparable.
//! [`against_rebuild`] compares it with a second build of the same inputs in another directory
//! (`--check-reproducible`), naming the first byte that differs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::manifest::{Arch, ArtifactFormat, Component, Digest, Manifest, ReleaseBuild};
use crate::store::{Checked, Store};
use crate::toolchain::UpstreamBuild;

use super::tools::{self, GoTool};

/// The build settings [`against_upstream`] compares, with what Go records when a build does not
/// set them.
const COMPARED: &[(&str, &str)] = &[
    ("-ldflags", ""),
    ("-tags", ""),
    ("-trimpath", "false"),
    ("-buildmode", "exe"),
    ("GOEXPERIMENT", ""),
];

/// The Go version named in a file's text: the whole text, or the rest of the first line that
/// starts with `prefix` (`ARG GO_VERSION=1.24.2` → `1.24.2`), without quotes or a leading `go`.
pub fn go_version_in(text: &str, prefix: Option<&str>) -> Option<String> {
    let value = match prefix {
        None => text.trim(),
        Some(p) => text.lines().find_map(|l| l.trim_start().strip_prefix(p))?,
    };
    let word = value
        .split_whitespace()
        .next()?
        .trim_matches(|c| c == '"' || c == '\'');
    let v = word.strip_prefix("go").unwrap_or(word);
    tools::parse_go_version(v).map(|_| v.to_owned())
}

/// Go's spelling of a `flags` entry as a build setting: `-trimpath` → (`-trimpath`, `true`),
/// `-buildmode=pie` → (`-buildmode`, `pie`), `GOEXPERIMENT=x` → (`GOEXPERIMENT`, `x`).
fn setting_of(flag: &str) -> (String, String) {
    match flag.split_once('=') {
        Some((k, v)) => (k.to_owned(), v.to_owned()),
        None => (flag.to_owned(), "true".to_owned()),
    }
}

/// How upstream builds this release: `go_file` is the text of the file the row names (read by
/// the caller from the commit), `vars` fill the row's ldflags template. Without a row, or a row
/// without ldflags, the settings are unknown (empty).
pub fn upstream_build(
    row: Option<&ReleaseBuild>,
    go_file: Option<&str>,
    vars: &[(&str, &str)],
) -> UpstreamBuild {
    let source = row.map(|r| r.go_version.clone()).unwrap_or_default();
    let go = go_file.and_then(|t| go_version_in(t, source.prefix.as_deref()));
    let go_from = match &source.prefix {
        Some(p) => format!("{}: {p}", source.file),
        None => source.file.clone(),
    };
    let mut settings = BTreeMap::new();
    if let Some(row) = row
        && let Some(ldflags) = &row.ldflags
    {
        settings.insert("-ldflags".to_owned(), super::fill(ldflags, vars));
        settings.insert("-tags".to_owned(), row.tags.join(","));
        settings.extend(row.flags.iter().map(|f| setting_of(f)));
    }
    UpstreamBuild {
        go,
        go_from,
        settings,
    }
}

/// The official digest of `binary` at `version`/`arch`, and where its bytes are when the store
/// has them: the pin of a binary artifact, or the member's digest in a pinned archive that is
/// in the store. `Err` says why there is none.
fn official(
    store: &Store,
    manifest: &Manifest,
    component: &Component,
    binary: &str,
    version: &semver::Version,
    arch: Arch,
    scratch: &Path,
) -> Result<(Digest, Option<PathBuf>), String> {
    let none = |why: String| format!("no official digest of {binary} {version} {arch} ({why})");
    let choice = manifest
        .artifact_for(component, binary, version, arch)
        .ok_or_else(|| none("the manifest has no artifact for it".into()))?;
    let pinned = choice
        .pinned
        .ok_or_else(|| none(format!("{} is not pinned", choice.url)))?;
    // The official bytes, when the store has them intact (checked: a damaged blob is removed).
    let intact = |d: &Digest| match store.check(d) {
        Ok(Checked::Intact(p)) => Some(p),
        _ => None,
    };
    match choice.format {
        ArtifactFormat::Binary => {
            let bytes = intact(&pinned);
            Ok((pinned, bytes))
        }
        ArtifactFormat::TarGz => {
            let archive = intact(&pinned).ok_or_else(|| {
                none(format!(
                    "the pin is of the archive {}, which is not in the store: install {} {version} \
                     once to have it",
                    choice.url, component.name
                ))
            })?;
            let member = choice.member.clone().unwrap_or_else(|| binary.to_owned());
            let got = crate::archive::extract_members(
                &archive,
                &[member.as_str()],
                scratch,
                &crate::archive::Limits::default(),
            )
            .map_err(|e| none(format!("cannot read {member} in {}: {e}", choice.url)))?;
            let m = got
                .into_iter()
                .next()
                .ok_or_else(|| none(format!("{} has no {member}", choice.url)))?;
            Ok((m.sha256, Some(m.path)))
        }
    }
}

/// The offset of the first byte where two files differ (or where the shorter one ends).
pub fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
    let mut fa = std::io::BufReader::new(std::fs::File::open(a)?);
    let mut fb = std::io::BufReader::new(std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What a comparison of a binary with upstream's needs besides the binary.
pub struct Upstream<'a> {
    /// The store (official bytes, archives).
    pub store: &'a Store,
    /// The manifest (pins).
    pub manifest: &'a Manifest,
    /// The component.
    pub component: &'a Component,
    /// The version built.
    pub version: &'a semver::Version,
    /// The arch built.
    pub arch: Arch,
    /// The release row, if the recipe has one for this version.
    pub row: Option<&'a ReleaseBuild>,
    /// How upstream builds it.
    pub build: &'a UpstreamBuild,
    /// The Go kbin used.
    pub go: Option<&'a GoTool>,
    /// PATH (for `go version -m`).
    pub path: &'a str,
    /// A fresh directory for unpacking an official binary out of its archive.
    pub scratch: &'a Path,
}

/// Compare one built binary (`file`, whose digest is `digest`) with upstream's release binary.
pub fn against_upstream(up: &Upstream<'_>, binary: &str, file: &Path, digest: &Digest) -> String {
    let Some(theirs) = &up.build.go else {
        return format!(
            "not comparable: the source tree does not say which Go upstream builds with ({})",
            up.build.go_from
        );
    };
    let Some(ours) = up.go else {
        return "not comparable: no Go was used".into();
    };
    if tools::parse_go_version(theirs) != Some(ours.semver.clone()) {
        return format!("not comparable: Go {} vs {theirs}", ours.version);
    }
    if up.build.settings.is_empty() {
        return format!(
            "not comparable: the recipe does not know the ldflags of upstream's release build of {} {} (no ldflags in its release row)",
            up.component.name, up.version
        );
    }
    let Some(built) = super::release::build_settings(file, up.path) else {
        return "not comparable: not a Go binary with build info".into();
    };
    // Go leaves -ldflags out of the build info of a -trimpath build (they may hold paths): then
    // they cannot be compared, and a difference in them shows as `differs`.
    let unrecorded = |key: &str| {
        key == "-ldflags"
            && !built.contains_key(key)
            && built.get("-trimpath").is_some_and(|t| t == "true")
    };
    for (key, default) in COMPARED {
        if unrecorded(key) {
            continue;
        }
        let want = up.build.settings.get(*key).map_or(*default, String::as_str);
        let have = built.get(*key).map_or(*default, String::as_str);
        let same = if *key == "-tags" {
            let set = |s: &str| {
                let mut v: Vec<String> = s
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
                v.sort();
                v
            };
            set(want) == set(have)
        } else {
            want == have
        };
        if !same {
            return format!("not comparable: {key} {have:?} vs {want:?}");
        }
    }
    if let Some(cgo) = up
        .row
        .and_then(|r| r.cgo.get(binary).or_else(|| r.cgo.get("*")))
    {
        let want = if *cgo { "1" } else { "0" };
        let have = built.get("CGO_ENABLED").map_or("0", String::as_str);
        if want != have {
            return format!("not comparable: CGO_ENABLED={have} vs CGO_ENABLED={want}");
        }
    }
    let (official, bytes) = match official(
        up.store,
        up.manifest,
        up.component,
        binary,
        up.version,
        up.arch,
        up.scratch,
    ) {
        Ok(o) => o,
        Err(why) => return format!("not comparable: {why}"),
    };
    if official == *digest {
        return "reproduces upstream".into();
    }
    let at = bytes
        .and_then(|b| first_difference(file, &b).ok().flatten())
        .map(|o| format!(", first difference at byte {o}"))
        .unwrap_or_default();
    format!("differs: {digest} vs the official {official}{at}")
}

/// Compare a binary (`first`, digest `digest`) with the same binary from a second build in
/// another directory (`second`).
pub fn against_rebuild(first: &Path, digest: &Digest, second: &Path) -> String {
    let other = match crate::store::cas::sha256_file(second) {
        Ok((d, _)) => d,
        Err(e) => return format!("differs: cannot read the second build's file: {e}"),
    };
    if other == *digest {
        return "same digest in a second build in another directory".into();
    }
    let at = first_difference(first, second)
        .ok()
        .flatten()
        .map(|o| format!(", first difference at byte {o}"))
        .unwrap_or_default();
    format!("differs: a second build in another directory gave {other}{at}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_versions_are_read_from_a_file_or_a_line() {
        assert_eq!(go_version_in("1.26.4\n", None).as_deref(), Some("1.26.4"));
        assert_eq!(
            go_version_in(
                "FROM x\nARG GO_VERSION=1.24\nRUN y\n",
                Some("ARG GO_VERSION=")
            ),
            Some("1.24".into())
        );
        assert_eq!(go_version_in("\n", None), None);
        assert_eq!(go_version_in("FROM x\n", Some("ARG GO_VERSION=")), None);
    }

    #[test]
    fn the_first_difference_is_found_across_buffers_and_at_a_shorter_end() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        let mut bytes = vec![7u8; 200_000];
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), None);
        bytes[150_001] = 8;
        std::fs::write(&b, &bytes).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), Some(150_001));
        std::fs::write(&b, &bytes[..1000]).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), Some(1000));
    }
}
