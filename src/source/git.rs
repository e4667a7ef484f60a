//! The git side of a source build: a bare mirror per repository under `git/`, fetching only the
//! ref a build needs (shallow where the transport allows), and checking a commit out into a work
//! tree.

use std::path::Path;

use git2::{AutotagOption, FetchOptions, Oid, Repository, build::CheckoutBuilder};

use super::SourceError;

/// What a ref resolved to after the fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The commit (40 hex).
    pub commit: String,
    /// Bytes received from the remote (0 when the mirror already had the commit).
    pub received_bytes: usize,
    /// Whether the fetch was shallow.
    pub shallow: bool,
}

/// The URL to hand to libgit2: URLs as they are, plain local paths made absolute.
pub fn normalize_source(source: &str) -> Result<String, SourceError> {
    if source.contains("://") {
        return Ok(source.to_owned());
    }
    let path = Path::new(source);
    let abs = std::fs::canonicalize(path).map_err(|e| {
        SourceError::Io(crate::fsx::PathIo {
            action: "cannot find the source repository",
            path: path.to_owned(),
            source: e,
        })
    })?;
    Ok(format!("file://{}", abs.display()))
}

fn git_err<'a>(url: &'a str, what: &'static str) -> impl FnOnce(git2::Error) -> SourceError + 'a {
    move |source| SourceError::Git {
        url: url.to_owned(),
        what,
        source,
    }
}

/// Open (or create) the bare mirror at `mirror` and fetch `git_ref` from `url` into it.
///
/// The ref is looked up in what the remote advertises (a tag, then a branch, then a full ref
/// name); a 40-hex commit id that no ref names is fetched by id. Only that ref is fetched, with
/// depth 1 when the transport supports it (libgit2's local transport does not: it falls back to
/// a full fetch of that one ref).
pub fn fetch_ref(mirror: &Path, url: &str, git_ref: &str) -> Result<Fetched, SourceError> {
    let repo = match Repository::open_bare(mirror) {
        Ok(r) => r,
        Err(_) => {
            std::fs::create_dir_all(mirror).map_err(|e| {
                SourceError::Io(crate::fsx::PathIo {
                    action: "cannot create",
                    path: mirror.to_owned(),
                    source: e,
                })
            })?;
            Repository::init_bare(mirror).map_err(git_err(url, "cannot create the mirror"))?
        }
    };
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(git_err(url, "cannot use the repository URL"))?;
    remote
        .connect(git2::Direction::Fetch)
        .map_err(git_err(url, "cannot reach the repository"))?;
    let heads: Vec<(String, Oid)> = remote
        .list()
        .map_err(git_err(url, "cannot list the repository's refs"))?
        .iter()
        .map(|h| (h.name().to_owned(), h.oid()))
        .collect();
    remote.disconnect().ok();

    let candidates = [
        format!("refs/tags/{git_ref}"),
        format!("refs/heads/{git_ref}"),
        git_ref.to_owned(),
    ];
    let found = candidates
        .iter()
        .find(|c| c.starts_with("refs/") && heads.iter().any(|(n, _)| n == *c));
    let (refspec, local_ref) = match found {
        Some(full) => {
            // Branches land under refs/kbin/ so a mirror never confuses them with tags.
            let local = match full.strip_prefix("refs/heads/") {
                Some(b) => format!("refs/kbin/heads/{b}"),
                None => full.clone(),
            };
            (format!("+{full}:{local}"), local)
        }
        None if git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let local = format!("refs/kbin/commits/{git_ref}");
            (format!("+{git_ref}:{local}"), local)
        }
        None => {
            let mut names: Vec<&str> = heads
                .iter()
                .filter_map(|(n, _)| {
                    n.strip_prefix("refs/tags/")
                        .or_else(|| n.strip_prefix("refs/heads/"))
                })
                .filter(|n| !n.ends_with("^{}"))
                .collect();
            names.sort();
            names.dedup();
            let shown: Vec<&str> = names.iter().rev().take(10).copied().collect();
            return Err(SourceError::NoSuchRef {
                url: url.to_owned(),
                git_ref: git_ref.to_owned(),
                known: shown.join(", "),
            });
        }
    };

    let mut received = 0usize;
    let mut shallow = !url.starts_with("file://");
    let run = |depth: i32| -> Result<usize, git2::Error> {
        let mut opts = FetchOptions::new();
        opts.download_tags(AutotagOption::None);
        if depth > 0 {
            opts.depth(depth);
        }
        let mut remote = repo.remote_anonymous(url)?;
        remote.fetch(&[refspec.as_str()], Some(&mut opts), None)?;
        Ok(remote.stats().received_bytes())
    };
    if shallow {
        match run(1) {
            Ok(n) => received += n,
            Err(_) => {
                // Servers and transports without shallow support: fetch that one ref fully.
                shallow = false;
                received += run(0).map_err(git_err(url, "cannot fetch"))?;
            }
        }
    } else {
        received += run(0).map_err(git_err(url, "cannot fetch"))?;
    }

    let commit = repo
        .revparse_single(&local_ref)
        .and_then(|o| o.peel_to_commit())
        .map_err(git_err(url, "the fetched ref is not a commit"))?;
    Ok(Fetched {
        commit: commit.id().to_string(),
        received_bytes: received,
        shallow,
    })
}

/// Check `commit` out of the bare mirror into `dest` (created fresh; removed first if present).
pub fn checkout(mirror: &Path, url: &str, commit: &str, dest: &Path) -> Result<(), SourceError> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| {
            SourceError::Io(crate::fsx::PathIo {
                action: "cannot clear the old work tree",
                path: dest.to_owned(),
                source: e,
            })
        })?;
    }
    std::fs::create_dir_all(dest).map_err(|e| {
        SourceError::Io(crate::fsx::PathIo {
            action: "cannot create",
            path: dest.to_owned(),
            source: e,
        })
    })?;
    let repo = Repository::open_bare(mirror).map_err(git_err(url, "cannot open the mirror"))?;
    let oid = Oid::from_str(commit).map_err(git_err(url, "bad commit id"))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(git_err(url, "cannot read the commit"))?;
    let mut co = CheckoutBuilder::new();
    co.force().target_dir(dest).update_index(false);
    repo.checkout_tree(tree.as_object(), Some(&mut co))
        .map_err(git_err(url, "cannot check out"))?;
    Ok(())
}
