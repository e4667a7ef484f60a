//! Mirror rewriting: an upstream URL becomes the URL kbin actually fetches.
//!
//! A mirror base replaces the upstream's scheme, host and port and keeps its path; a path in
//! the base is prepended (`https://m.example/k8s` + `https://dl.k8s.io/release/v1.30.0/x` =
//! `https://m.example/k8s/release/v1.30.0/x`). `file://` bases work the same way, so any
//! directory laid out like upstream is a mirror.

use std::collections::BTreeMap;

use url::Url;

use super::FetchError;

/// The schemes kbin fetches from.
const SCHEMES: [&str; 3] = ["http", "https", "file"];

fn parse(url: &str) -> Result<Url, FetchError> {
    let parsed = Url::parse(url).map_err(|e| FetchError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if parsed.scheme() == "file" {
        file_url_problem(url, &parsed).map_err(|reason| FetchError::BadUrl {
            url: url.to_owned(),
            reason,
        })?;
    }
    if !SCHEMES.contains(&parsed.scheme()) {
        return Err(FetchError::BadUrl {
            url: url.to_owned(),
            reason: format!(
                "the scheme {:?} is not one of http, https, file",
                parsed.scheme()
            ),
        });
    }
    Ok(parsed)
}

/// What is wrong with a `file:` URL, if anything. The url crate makes `file:relative/path` into
/// `file:///relative/path` without a word, and reads `file://relative/path` as a host named
/// `relative`: either way a relative directory would silently become another, absolute one.
fn file_url_problem(raw: &str, parsed: &Url) -> Result<(), String> {
    let rest = raw.trim().get("file:".len()..).unwrap_or_default();
    if !rest.starts_with('/') {
        return Err(format!(
            "{rest:?} is a relative path; a file mirror needs an absolute one: file:///ABSOLUTE/DIR"
        ));
    }
    match parsed.host_str() {
        None | Some("") | Some("localhost") => Ok(()),
        Some(host) => Err(format!(
            "it names the host {host:?} (two slashes); a local directory is file:///ABSOLUTE/DIR (three)"
        )),
    }
}

/// Check a mirror base (`--mirror`, `KBIN_MIRROR`, or a settings.toml `[mirrors]` entry) before
/// any work, whether or not anything will be downloaded: it must parse, use http, https or
/// file, and a `file:` one must name an absolute path to an existing directory.
pub(crate) fn check_base(base: &str) -> Result<(), String> {
    let parsed = parse(base).map_err(|e| match e {
        FetchError::BadUrl { reason, .. } => reason,
        other => other.to_string(),
    })?;
    match parsed.scheme() {
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|()| "it is not a local path".to_owned())?;
            if !dir.is_dir() {
                return Err(format!("{} is not a directory", dir.display()));
            }
        }
        _ if parsed.host_str().is_none_or(str::is_empty) => {
            return Err("it names no host".to_owned());
        }
        _ => {}
    }
    Ok(())
}

/// Put `upstream`'s path (and query) under `base`.
pub(crate) fn rebase(base: &str, upstream: &Url) -> Result<Url, FetchError> {
    let mut out = parse(base)?;
    let prefix = out.path().trim_end_matches('/').to_owned();
    out.set_path(&format!("{prefix}{}", upstream.path()));
    out.set_query(upstream.query());
    out.set_fragment(None);
    Ok(out)
}

/// The URL to fetch for `upstream`: `mirror` (the `--mirror` flag or `KBIN_MIRROR`) wins, then a
/// per-host entry of `host_mirrors` (keys are hosts, optionally with `:port`), else `upstream`.
pub(crate) fn resolve(
    upstream: &str,
    mirror: Option<&str>,
    host_mirrors: &BTreeMap<String, String>,
) -> Result<Url, FetchError> {
    let up = parse(upstream)?;
    if let Some(m) = mirror {
        return rebase(m, &up);
    }
    if let Some(host) = up.host_str() {
        let with_port = up.port().map(|p| format!("{host}:{p}"));
        let base = with_port
            .as_deref()
            .and_then(|hp| host_mirrors.get(hp))
            .or_else(|| host_mirrors.get(host));
        if let Some(base) = base {
            return rebase(base, &up);
        }
    }
    Ok(up)
}

/// The URL to clone for an upstream git repository: the same host mapping as artifacts
/// (`https://github.com/opencontainers/runc` under `--mirror file:///srv/m` is
/// `file:///srv/m/opencontainers/runc`). `None` when no mirror applies, or the repository is
/// not an http(s) one (a `file://` repository is local already; git:// and ssh are left alone).
pub fn repository_url(
    repository: &str,
    mirror: Option<&str>,
    host_mirrors: &BTreeMap<String, String>,
) -> Result<Option<String>, FetchError> {
    if !(repository.starts_with("https://") || repository.starts_with("http://")) {
        return Ok(None);
    }
    let out = resolve(repository, mirror, host_mirrors)?;
    Ok((out.as_str() != repository).then(|| out.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn a_relative_file_mirror_is_refused_not_made_absolute() {
        for bad in ["file:relative/path", "file://relative/path", "file:./m"] {
            let e = resolve("https://dl.k8s.io/v1.30.0/x", Some(bad), &none()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("relative") && msg.contains("file:///ABSOLUTE/DIR"),
                "{bad}: {msg}"
            );
            assert!(check_base(bad).is_err(), "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        let good = format!("file://{}", d.path().display());
        assert_eq!(check_base(&good), Ok(()));
        assert!(
            check_base(&format!("{good}/missing"))
                .unwrap_err()
                .contains("is not a directory")
        );
        assert!(
            check_base("ftp://m.example")
                .unwrap_err()
                .contains("scheme")
        );
        assert_eq!(check_base("http://127.0.0.1:1/k8s"), Ok(()));
    }

    #[test]
    fn mirror_replaces_scheme_and_host_and_keeps_the_path() {
        let u = resolve(
            "https://dl.k8s.io/release/v1.30.0/bin/linux/amd64/kubectl",
            Some("http://127.0.0.1:8080"),
            &none(),
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/release/v1.30.0/bin/linux/amd64/kubectl"
        );
    }

    #[test]
    fn mirror_path_prefix_is_prepended() {
        for base in ["https://m.example/k8s", "https://m.example/k8s/"] {
            let u = resolve("https://dl.k8s.io/v1.30.0/x.tar.gz", Some(base), &none()).unwrap();
            assert_eq!(u.as_str(), "https://m.example/k8s/v1.30.0/x.tar.gz");
        }
    }

    #[test]
    fn file_mirror_keeps_the_path() {
        let u = resolve(
            "https://github.com/etcd-io/etcd/releases/download/v3.5.16/etcd.tar.gz",
            Some("file:///srv/mirror"),
            &none(),
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "file:///srv/mirror/etcd-io/etcd/releases/download/v3.5.16/etcd.tar.gz"
        );
    }

    #[test]
    fn host_mirror_applies_only_to_its_host_and_flag_wins() {
        let mut hosts = none();
        hosts.insert("github.com".into(), "http://gh.local/base".into());
        let gh = "https://github.com/a/b";
        assert_eq!(
            resolve(gh, None, &hosts).unwrap().as_str(),
            "http://gh.local/base/a/b"
        );
        assert_eq!(
            resolve("https://dl.k8s.io/a", None, &hosts)
                .unwrap()
                .as_str(),
            "https://dl.k8s.io/a"
        );
        assert_eq!(
            resolve(gh, Some("http://flag.local"), &hosts)
                .unwrap()
                .as_str(),
            "http://flag.local/a/b"
        );
    }

    #[test]
    fn unsupported_schemes_are_refused() {
        let err = resolve("ftp://x/y", None, &none()).unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
        let err = resolve("https://x/y", Some("gopher://m"), &none()).unwrap_err();
        assert!(err.to_string().contains("gopher"), "{err}");
    }

    #[test]
    fn repositories_follow_the_same_mirrors_as_artifacts() {
        let hosts: BTreeMap<String, String> =
            [("github.com".to_string(), "file:///srv/gh".to_string())].into();
        assert_eq!(
            repository_url("https://github.com/opencontainers/runc", None, &hosts).unwrap(),
            Some("file:///srv/gh/opencontainers/runc".into())
        );
        assert_eq!(
            repository_url(
                "https://github.com/opencontainers/runc",
                Some("http://127.0.0.1:9/m"),
                &hosts
            )
            .unwrap(),
            Some("http://127.0.0.1:9/m/opencontainers/runc".into())
        );
        assert_eq!(
            repository_url("https://example.org/x", None, &hosts).unwrap(),
            None
        );
        for local in ["git://127.0.0.1/x", "file:///srv/repos/runc"] {
            assert_eq!(
                repository_url(local, Some("file:///m"), &hosts).unwrap(),
                None
            );
        }
    }
}
