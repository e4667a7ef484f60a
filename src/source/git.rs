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
    let abs = std::fs::canonicalize(path).map_err(crate::fsx::at::<SourceError>(
        "cannot find the source repository",
        path,
    ))?;
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
    let repo = open_mirror(mirror, url)?;
    if let Some(path) = url.strip_prefix("file://") {
        return fetch_local(&repo, url, Path::new(path), git_ref);
    }
    fetch_remote(&repo, url, git_ref)
}

/// Open (or create) the bare mirror at `mirror`.
fn open_mirror(mirror: &Path, url: &str) -> Result<Repository, SourceError> {
    Ok(match Repository::open_bare(mirror) {
        Ok(r) => r,
        Err(_) => {
            std::fs::create_dir_all(mirror)
                .map_err(crate::fsx::at::<SourceError>("cannot create", mirror))?;
            Repository::init_bare(mirror).map_err(git_err(url, "cannot create the mirror"))?
        }
    })
}

/// Fetch `git_ref` from a remote repository (git://, http(s)://, ssh).
fn fetch_remote(repo: &Repository, url: &str, git_ref: &str) -> Result<Fetched, SourceError> {
    super::http::register();
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

    let candidates = ref_candidates(git_ref);
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
            let names: Vec<&str> = heads
                .iter()
                .filter_map(|(n, _)| {
                    n.strip_prefix("refs/tags/")
                        .or_else(|| n.strip_prefix("refs/heads/"))
                })
                .filter(|n| !n.ends_with("^{}"))
                .collect();
            return Err(no_such_ref(url, git_ref, names));
        }
    };

    let mut received = 0usize;
    let mut shallow = true;
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

/// Run `f` with the bare mirror and `commit` in it (a commit kbin fetched into it).
fn with_commit<T>(
    mirror: &Path,
    url: &str,
    commit: &str,
    f: impl FnOnce(&Repository, &git2::Commit<'_>) -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    let repo = Repository::open_bare(mirror).map_err(git_err(url, "cannot open the mirror"))?;
    let oid = Oid::from_str(commit).map_err(git_err(url, "bad commit id"))?;
    let c = repo
        .find_commit(oid)
        .map_err(git_err(url, "cannot read the commit"))?;
    f(&repo, &c)
}

/// Check `commit` out of the bare mirror into `dest` (created fresh; removed first if present).
pub fn checkout(mirror: &Path, url: &str, commit: &str, dest: &Path) -> Result<(), SourceError> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(crate::fsx::at::<SourceError>(
            "cannot clear the old work tree",
            dest,
        ))?;
    }
    std::fs::create_dir_all(dest).map_err(crate::fsx::at::<SourceError>("cannot create", dest))?;
    with_commit(mirror, url, commit, |repo, c| {
        let tree = c.tree().map_err(git_err(url, "cannot read the commit"))?;
        let mut co = CheckoutBuilder::new();
        co.force().target_dir(dest).update_index(false);
        repo.checkout_tree(tree.as_object(), Some(&mut co))
            .map_err(git_err(url, "cannot check out"))
    })
}

/// The committer time of `commit` (seconds since the epoch): what `SOURCE_DATE_EPOCH`
/// conventionally is for a build of it.
pub fn commit_time(mirror: &Path, url: &str, commit: &str) -> Result<i64, SourceError> {
    with_commit(mirror, url, commit, |_, c| Ok(c.time().seconds()))
}

/// The text of the file at `path` in `commit`'s tree (read from the mirror, no checkout), or
/// `None` when the tree has no such file.
pub fn read_file(
    mirror: &Path,
    url: &str,
    commit: &str,
    path: &str,
) -> Result<Option<String>, SourceError> {
    with_commit(mirror, url, commit, |repo, c| {
        let tree = c.tree().map_err(git_err(url, "cannot read the commit"))?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        let blob = repo
            .find_blob(entry.id())
            .map_err(git_err(url, "cannot read the commit"))?;
        Ok(Some(String::from_utf8_lossy(blob.content()).into_owned()))
    })
}

/// Copy `git_ref` of the repository at `path` into the mirror: the commit and every tree and
/// blob of its tree, nothing of its history.
///
/// libgit2's local transport copies the whole history, which a shallow clone (`git clone
/// --depth 1`) or a partial one (`--filter=blob:none`) does not have ("object not found"), and
/// it refuses a partial clone's `extensions.partialclone` outright. So the source's refs are
/// read through libgit2's refdb (partial clones allowed) and its object database directly, and
/// only what the build checks out is copied.
fn fetch_local(
    mirror: &Repository,
    url: &str,
    path: &Path,
    git_ref: &str,
) -> Result<Fetched, SourceError> {
    let git_dir = if path.join(".git").is_dir() {
        path.join(".git")
    } else {
        path.to_owned()
    };
    if !git_dir.join("objects").is_dir() {
        return Err(SourceError::NotARepository {
            url: url.to_owned(),
            path: path.to_owned(),
        });
    }
    let (local_ref, target) = resolve_local_ref(&git_dir, url, git_ref)?;
    let missing = |e: git2::Error| SourceError::IncompleteLocal {
        url: url.to_owned(),
        git_ref: git_ref.to_owned(),
        path: path.to_owned(),
        source: e,
    };
    let commit = copy_commit(mirror, url, &git_dir, target, &missing)?;
    mirror
        .reference(&local_ref, commit, true, "kbin: local copy")
        .map_err(git_err(url, "cannot record the ref in the mirror"))?;
    Ok(Fetched {
        commit: commit.to_string(),
        received_bytes: 0,
        shallow: true,
    })
}

/// `git_ref` among the refs of the repository at `git_dir` (or a full commit id): the ref the
/// mirror records it under, and its target.
fn resolve_local_ref(
    git_dir: &Path,
    url: &str,
    git_ref: &str,
) -> Result<(String, Oid), SourceError> {
    let refs = local_refs(git_dir, url)?;
    let candidates = ref_candidates(git_ref);
    let found = candidates
        .iter()
        .find_map(|c| refs.get(c).map(|oid| (c.clone(), *oid)));
    let (full, target) = match found {
        Some(f) => f,
        None if git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) => (
            format!("refs/kbin/commits/{git_ref}"),
            Oid::from_str(git_ref).map_err(git_err(url, "bad commit id"))?,
        ),
        None => {
            let names: Vec<&str> = refs
                .keys()
                .filter_map(|n| {
                    n.strip_prefix("refs/tags/")
                        .or_else(|| n.strip_prefix("refs/heads/"))
                })
                .collect();
            return Err(no_such_ref(url, git_ref, names));
        }
    };
    let local_ref = match full.strip_prefix("refs/heads/") {
        Some(b) => format!("refs/kbin/heads/{b}"),
        None => full,
    };
    Ok((local_ref, target))
}

/// Copy the commit `target` peels to, its tree and every tree and blob under it (not its
/// submodules) from the objects under `git_dir` into the mirror: the commit's id. An object
/// the source lacks is the error `missing` makes.
fn copy_commit(
    mirror: &Repository,
    url: &str,
    git_dir: &Path,
    target: Oid,
    missing: &dyn Fn(git2::Error) -> SourceError,
) -> Result<Oid, SourceError> {
    // The source's objects, through an object database of its own (no repository open, so no
    // extension check), wrapped so that commits and trees can be read.
    let odb = git2::Odb::new().map_err(git_err(url, "cannot read the objects"))?;
    odb.add_disk_alternate(&git_dir.join("objects").display().to_string())
        .map_err(git_err(url, "cannot read the objects"))?;
    let src = Repository::from_odb(odb).map_err(git_err(url, "cannot read the objects"))?;
    let commit = src
        .find_object(target, None)
        .and_then(|o| o.peel_to_commit())
        .map_err(missing)?;
    let tree = commit.tree().map_err(missing)?;
    let dst = mirror
        .odb()
        .map_err(git_err(url, "cannot open the mirror"))?;
    let src_odb = src.odb().map_err(git_err(url, "cannot read the objects"))?;
    let copy = |oid: Oid| -> Result<(), git2::Error> {
        if !dst.exists(oid) {
            let o = src_odb.read(oid)?;
            dst.write(o.kind(), o.data())?;
        }
        Ok(())
    };
    copy(commit.id()).map_err(missing)?;
    copy(tree.id()).map_err(missing)?;
    let mut failed: Option<git2::Error> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        // Submodules (commits inside a tree) are not part of the checkout.
        if entry.kind() == Some(git2::ObjectType::Commit) {
            return git2::TreeWalkResult::Ok;
        }
        match copy(entry.id()) {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failed = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .map_err(missing)?;
    match failed {
        Some(e) => Err(missing(e)),
        None => Ok(commit.id()),
    }
}

/// The refs of a local repository, read through libgit2's refdb (loose files under `refs/`,
/// `packed-refs`), plus `HEAD` resolved to a commit when it is born. An annotated tag maps to
/// its tag object (peeled to the commit later).
fn local_refs(
    git_dir: &Path,
    url: &str,
) -> Result<std::collections::BTreeMap<String, Oid>, SourceError> {
    allow_partial_clones();
    let repo = Repository::open_ext(
        git_dir,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(git_err(url, "cannot read the repository's refs"))?;
    let mut out = std::collections::BTreeMap::new();
    let refs = repo
        .references()
        .map_err(git_err(url, "cannot read the repository's refs"))?;
    for r in refs {
        let r = r.map_err(git_err(url, "cannot read the repository's refs"))?;
        // Symbolic refs (refs/remotes/origin/HEAD) name another ref: resolve them.
        let Some(name) = r.name().map(str::to_owned) else {
            continue;
        };
        if let Some(oid) = r.resolve().ok().and_then(|r| r.target()) {
            out.insert(name, oid);
        }
    }
    // An unborn HEAD (a repository with no commit yet) names nothing.
    if let Some(oid) = repo.head().ok().and_then(|h| h.target()) {
        out.insert("HEAD".into(), oid);
    }
    Ok(out)
}

/// Let libgit2 open partial clones (`git clone --filter=blob:none`): it refuses a repository
/// whose config sets `extensions.partialclone` unless told the caller copes, and kbin does (it
/// only reads refs and the objects the build checks out, and says which are missing).
fn allow_partial_clones() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: libgit2 keeps the list in a static; the Once runs this before any repository
        // of a local source is opened, and nothing else in kbin sets extensions.
        // On failure a partial clone fails to open later with libgit2's own message, which
        // names the extension: nothing to add here.
        let _ = unsafe { git2::opts::set_extensions(&["partialclone"]) };
    });
}

/// The names a `--ref` may stand for, in the order they win: a tag, a branch, a full ref name.
fn ref_candidates(git_ref: &str) -> [String; 3] {
    [
        format!("refs/tags/{git_ref}"),
        format!("refs/heads/{git_ref}"),
        git_ref.to_owned(),
    ]
}

/// `git_ref` is none of the repository's refs: the error names the newest ten of `names`.
fn no_such_ref(url: &str, git_ref: &str, mut names: Vec<&str>) -> SourceError {
    names.sort();
    names.dedup();
    let shown: Vec<&str> = names.iter().rev().take(10).copied().collect();
    SourceError::NoSuchRef {
        url: url.to_owned(),
        git_ref: git_ref.to_owned(),
        known: shown.join(", "),
    }
}
