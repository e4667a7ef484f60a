//! KBIN_HOME: the one type that owns every path under it, and the user's settings.
//!
//! The whole tree, drawn once (README's "Where things go" is this drawing):
//!
//! ```text
//! $KBIN_HOME/
//! ├── cache/
//! │   ├── blobs/<algo>/<2 hex>/<hex>       immutable, read-only files (artifacts, binaries),
//! │   │                                    named by sha256; a sha512 pin is a hardlink alias
//! │   ├── verified/<algo>-<hex>            a blob's stat when its bytes were last hashed
//! │   ├── trees/<algo>-<hex>/members.toml  an archive's members: path → blob digest, or "absent"
//! │   ├── trees/<algo>-<hex>/signature.toml  the signature that vouched for the blob (its bundle)
//! │   ├── trees/<algo>-<hex>/openpgp.toml  the OpenPGP `.asc` that vouched for the blob
//! │   ├── trees/<algo>-<hex>/openpgp-absent  the `.asc` URL upstream had nothing at
//! │   ├── index/urls/<sha256 of the URL>   the digest an unpinned artifact was verified as
//! │   ├── bundles/sha256-<key hex>         shared binaries bundle refs: key → the bundle's blob
//! │   ├── images/<image>@<arch>.toml       a pulled image: tag digest → its OCI archive's blob
//! │   ├── go/path/, go/build/              GOPATH and GOCACHE of source builds
//! │   └── tmp/                             staging, same filesystem as the blobs
//! │       ├── <algo>-<hex>.partial         a download in progress (resumable)
//! │       └── locks/<key>.lock             one per artifact, repository fetch and build
//! ├── git/<host>/<path>.git                bare mirrors for source builds
//! ├── builds/
//! │   ├── <key>/src/                       a build's work tree
//! │   ├── <key>/home/                      its HOME
//! │   ├── <key>/build.log                  the recipe's output
//! │   └── index/<key>.toml                 a finished build: binary name → blob digest
//! ├── toolchains/
//! │   ├── <name>/bin/…                     hardlinks into cache/blobs (copies where links fail)
//! │   ├── <name>/images/<image>-<tag>.tar  pulled images (OCI archives), hardlinks into cache/blobs
//! │   ├── <name>/toolchain.lock            the receipt
//! │   ├── .<name>.lock                     held while toolchain <name> is replaced
//! │   └── .staging-<name>-*/ .old-* …      a toolchain being assembled or swapped out
//! ├── settings.toml                        default toolchain, mirrors
//! ├── manifest-overlay.toml                what `kbin update` learned: new releases, TOFU digests
//! └── .lock                                shared by installs, exclusive for `cache gc`
//! ```
//!
//! Nothing is created until a command needs it ([`Layout::ensure`]); kbin writes nowhere else.

pub mod cas;
pub mod maintain;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::Digest;

use crate::fsx::{PathIo, at};
pub use cas::{CasError, Checked, DamagedBlob, FileLock, Store};

/// Errors of the store layout and settings.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No home directory to default to.
    #[error("cannot tell where KBIN_HOME is: set KBIN_HOME or pass --home DIR")]
    NoHome,
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// KBIN_HOME itself cannot be used: one error naming it, whatever path below it failed.
    #[error(
        "KBIN_HOME {path} {problem}: point KBIN_HOME (or --home) at a directory kbin can write"
    )]
    Home {
        /// KBIN_HOME.
        path: PathBuf,
        /// What is wrong with it ("is not a directory", "is on a read-only filesystem", …).
        problem: &'static str,
        /// The error that showed it, if any.
        #[source]
        source: Option<std::io::Error>,
    },
    /// settings.toml does not parse.
    #[error("{path} is not valid settings: {message}")]
    Settings {
        /// The path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// Every path under KBIN_HOME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The receipt's file name inside a toolchain directory.
    pub const RECEIPT_FILE: &'static str = "toolchain.lock";

    /// A layout rooted at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// `--home`, else `$KBIN_HOME` (clap fills both into `explicit`), else `~/.kbin`.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self, StoreError> {
        if let Some(p) = explicit {
            return Ok(Self::new(p));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(StoreError::NoHome)?;
        Ok(Self::new(PathBuf::from(home).join(".kbin")))
    }

    /// KBIN_HOME itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `cache/`.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `cache/blobs/`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.cache_dir().join("blobs")
    }

    /// Where a blob with `digest` lives: `cache/blobs/<algo>/<2 hex>/<hex>`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir()
            .join(digest.algo().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    /// `cache/verified/`: one [`cas::Stamp`] per blob, its stat when its bytes were last hashed.
    pub fn stamps_dir(&self) -> PathBuf {
        self.cache_dir().join("verified")
    }

    /// `cache/verified/<algo>-<hex>`: the stamp of the blob with `digest`.
    pub fn blob_stamp(&self, digest: &Digest) -> PathBuf {
        self.stamps_dir()
            .join(format!("{}-{}", digest.algo().as_str(), digest.hex()))
    }

    /// `cache/trees/`.
    pub fn trees_dir(&self) -> PathBuf {
        self.cache_dir().join("trees")
    }

    /// Where the archive with `digest` is extracted.
    pub fn tree_path(&self, digest: &Digest) -> PathBuf {
        self.trees_dir()
            .join(format!("{}-{}", digest.algo().as_str(), digest.hex()))
    }

    /// `cache/bundles/`: one small text file per shared binaries bundle that `kbin gen` made
    /// (`bundles/<role>-<arch>-binaries.tar.gz`), so that another run, `gen node` or another
    /// cluster from the same toolchain reuses it instead of compressing hundreds of MB again.
    ///
    /// ```text
    /// cache/bundles/sha256-<key hex>
    ///     sha256:<hex>                                        the bundle's blob
    ///     verified size=<n> mtime_ns=<n> dev=<n> ino=<n>      its stat when last hashed
    /// ```
    ///
    /// The key is the sha256 of what the bundle holds (each binary's digest, path and mode in
    /// the tarball) and of the bundle format's version; the bundle itself is an ordinary blob in
    /// `cache/blobs/`, re-hashed before reuse whenever its stat is not the one recorded. `cache gc` removes such blobs (no receipt
    /// references them): a ref whose blob is gone is a miss, and the bundle is made again.
    pub fn bundles_dir(&self) -> PathBuf {
        self.cache_dir().join("bundles")
    }

    /// `cache/images/<registry_repo_tag>@<arch>.toml`: what pulling `image` for `arch` gave
    /// (the tag's digest when pulled, the archive's blob), so a reinstall asks the registry
    /// nothing. `cache gc` keeps archives that receipts name; a record whose blob is gone is a
    /// miss.
    pub fn image_record(&self, image: &str, arch: &str) -> PathBuf {
        let safe: String = image
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.cache_dir()
            .join("images")
            .join(format!("{safe}@{arch}.toml"))
    }

    /// The ref of the shared bundle whose content key is `key`.
    pub fn bundle_ref(&self, key: &Digest) -> PathBuf {
        self.bundles_dir()
            .join(format!("{}-{}", key.algo().as_str(), key.hex()))
    }

    /// `cache/trees/<algo>-<hex>/members.toml`: which blob each member of the archive with
    /// `digest` is, so an archive is unpacked once.
    pub fn members_index(&self, digest: &Digest) -> PathBuf {
        self.tree_path(digest).join("members.toml")
    }

    /// `cache/trees/<algo>-<hex>/signature.toml`: the signature that vouched for the blob with
    /// `digest` (its bundle, its URL, who signed), so a later install and `mirror export` have it
    /// without asking upstream again.
    pub fn signature_record(&self, digest: &Digest) -> PathBuf {
        self.tree_path(digest).join("signature.toml")
    }

    /// `cache/trees/<algo>-<hex>/openpgp.toml`: the OpenPGP signature (`.asc`) that vouched for
    /// the blob with `digest` (its text, its URL, whose key), so a later install does not verify
    /// it again and `mirror export` carries it.
    pub fn openpgp_record(&self, digest: &Digest) -> PathBuf {
        self.tree_path(digest).join("openpgp.toml")
    }

    /// `cache/trees/<algo>-<hex>/openpgp-absent`: the `.asc` URL upstream had no signature at
    /// when the blob with `digest` was stored, so a later install from the store (offline too)
    /// does not ask again.
    pub fn openpgp_absent(&self, digest: &Digest) -> PathBuf {
        self.tree_path(digest).join("openpgp-absent")
    }

    /// `cache/index/urls/<sha256 of url>`: the digest an unpinned artifact was verified as, so a
    /// later install needs no checksum request.
    pub fn url_index(&self, url: &str) -> PathBuf {
        self.cache_dir()
            .join("index")
            .join("urls")
            .join(crate::util::sha256_hex(url.as_bytes()))
    }

    /// `cache/go/path/`: the GOPATH every source build shares (its module cache).
    pub fn go_path(&self) -> PathBuf {
        self.cache_dir().join("go").join("path")
    }

    /// `cache/go/build/`: the GOCACHE every source build shares.
    pub fn go_cache(&self) -> PathBuf {
        self.cache_dir().join("go").join("build")
    }

    /// `cache/tmp/`: same filesystem as blobs and toolchains, so renames are atomic.
    pub fn tmp_dir(&self) -> PathBuf {
        self.cache_dir().join("tmp")
    }

    /// `cache/tmp/<algo>-<hex>.partial`: the download of the artifact with `digest`, kept
    /// across runs so it resumes.
    pub fn partial_download(&self, digest: &Digest) -> PathBuf {
        self.tmp_dir().join(format!(
            "{}-{}.partial",
            digest.algo().as_str(),
            digest.hex()
        ))
    }

    /// `cache/tmp/locks/<key>.lock` (`key` already made file-name safe).
    pub fn key_lock(&self, key: &str) -> PathBuf {
        self.tmp_dir().join("locks").join(format!("{key}.lock"))
    }

    /// `git/`.
    pub fn git_dir(&self) -> PathBuf {
        self.root.join("git")
    }

    /// The bare mirror of a repository URL: `git/<host>/<path>.git`.
    pub fn git_mirror(&self, url: &str) -> PathBuf {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
        let mut path = self.git_dir();
        for part in rest
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .split('/')
        {
            // Never let a URL climb out of git/.
            let part = match part {
                "" | "." | ".." => "_",
                p => p,
            };
            path.push(part.replace(':', "_"));
        }
        path.set_extension(match path.extension() {
            Some(e) => format!("{}.git", e.to_string_lossy()),
            None => "git".into(),
        });
        path
    }

    /// `builds/`.
    pub fn builds_dir(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// `builds/<key>/`: one build's work tree, home and log.
    pub fn build_dir(&self, key: &str) -> PathBuf {
        self.builds_dir().join(key)
    }

    /// `builds/<key>/src/`: the build's work tree.
    pub fn build_src(&self, key: &str) -> PathBuf {
        self.build_dir(key).join("src")
    }

    /// `builds/<key>/home/`: the build's HOME.
    pub fn build_home(&self, key: &str) -> PathBuf {
        self.build_dir(key).join("home")
    }

    /// `builds/<key>/build.log`: the recipe's output.
    pub fn build_log(&self, key: &str) -> PathBuf {
        self.build_dir(key).join("build.log")
    }

    /// `builds/index/<key>.toml`: a finished build's outputs (written last: it says "built").
    pub fn build_index(&self, key: &str) -> PathBuf {
        self.builds_dir().join("index").join(format!("{key}.toml"))
    }

    /// `toolchains/`.
    pub fn toolchains_dir(&self) -> PathBuf {
        self.root.join("toolchains")
    }

    /// `toolchains/<name>/`.
    pub fn toolchain_dir(&self, name: &str) -> PathBuf {
        self.toolchains_dir().join(name)
    }

    /// `toolchains/<name>/bin/`.
    pub fn toolchain_bin(&self, name: &str) -> PathBuf {
        self.toolchain_dir(name).join("bin")
    }

    /// `toolchains/<name>/toolchain.lock`.
    pub fn receipt_path(&self, name: &str) -> PathBuf {
        self.toolchain_dir(name).join(Self::RECEIPT_FILE)
    }

    /// `toolchains/.<name>.lock`: held while toolchain `name` is replaced or removed.
    pub fn toolchain_lock(&self, name: &str) -> PathBuf {
        self.toolchains_dir().join(format!(".{name}.lock"))
    }

    /// `manifest-overlay.toml`: what `kbin update` learned from upstream, merged over the
    /// built-in manifest (see `manifest::overlay`).
    pub fn overlay_path(&self) -> PathBuf {
        self.root.join("manifest-overlay.toml")
    }

    /// `settings.toml`.
    pub fn settings_path(&self) -> PathBuf {
        self.root.join("settings.toml")
    }

    /// `.lock`: shared by installs and builds, exclusive for `cache gc`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Check that KBIN_HOME can be used: a directory kbin can read and, with `write`, write
    /// (created if missing). Whatever is wrong is one [`StoreError::Home`] naming KBIN_HOME,
    /// not an error about the first path below it that happened to fail.
    pub fn check_home(&self, write: bool) -> Result<(), StoreError> {
        let root = &self.root;
        let home = |problem: &'static str, source: Option<std::io::Error>| {
            // The errno says more than the step that met it.
            use std::io::ErrorKind as K;
            let problem = match source.as_ref().map(std::io::Error::kind) {
                Some(K::ReadOnlyFilesystem) => "is on a read-only filesystem",
                Some(K::NotADirectory) => "is not a directory (or a file is in its path)",
                Some(K::PermissionDenied) if write => "is not writable by this user",
                Some(K::PermissionDenied) => "cannot be read by this user",
                _ => problem,
            };
            StoreError::Home {
                path: root.clone(),
                problem,
                source,
            }
        };
        match std::fs::metadata(root) {
            Ok(m) if !m.is_dir() => return Err(home("is not a directory", None)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !write {
                    return Ok(());
                }
                std::fs::create_dir_all(root).map_err(|e| home("cannot be created", Some(e)))?;
            }
            Err(e) => return Err(home("cannot be read", Some(e))),
        }
        std::fs::read_dir(root).map_err(|e| home("cannot be read", Some(e)))?;
        if write {
            // Writing is the only test that tells a read-only mount or a missing permission;
            // a file created and removed at once costs microseconds.
            tempfile::Builder::new()
                .prefix(".kbin-write-check-")
                .tempfile_in(root)
                .map_err(|e| home("is not writable", Some(e)))?;
        }
        Ok(())
    }

    /// `err`, unless KBIN_HOME itself is what is wrong: then that, naming it.
    fn or_home(&self, err: StoreError) -> StoreError {
        match self.check_home(false) {
            Err(home) => home,
            Ok(()) => err,
        }
    }

    /// Create the directories of the layout (idempotent), after checking KBIN_HOME is a
    /// directory kbin can write.
    pub fn ensure(&self) -> Result<(), StoreError> {
        self.check_home(true)?;
        for d in [
            self.blobs_dir(),
            self.trees_dir(),
            self.tmp_dir(),
            self.git_dir(),
            self.builds_dir(),
            self.toolchains_dir(),
        ] {
            std::fs::create_dir_all(&d).map_err(at::<StoreError>("cannot create", &d))?;
        }
        Ok(())
    }

    /// Read settings.toml (defaults when absent).
    pub fn settings(&self) -> Result<Settings, StoreError> {
        let path = self.settings_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| StoreError::Settings {
                path,
                message: e.to_string().trim_end().to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(self.or_home(at::<StoreError>("cannot read", &path)(e))),
        }
    }

    /// Write settings.toml atomically.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), StoreError> {
        let text = toml::to_string_pretty(settings).expect("settings always serialize");
        // Plain configuration, nothing secret: readable by all like any dotfile.
        Ok(crate::fsx::write_atomic(
            &self.settings_path(),
            text.as_bytes(),
            0o644,
        )?)
    }

    /// Names of the installed toolchains (directories with a receipt), sorted.
    pub fn toolchain_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.toolchains_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.or_home(at::<StoreError>("cannot read", &dir)(e))),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(at::<StoreError>("cannot read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && self.receipt_path(&name).is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// `$KBIN_HOME/settings.toml`.
///
/// ```toml
/// default = "1.30"                      # the default toolchain
/// [mirrors]                             # per-host mirrors: upstream host = replacement base URL
/// "dl.k8s.io" = "https://mirror.example/k8s"
/// "github.com" = "file:///srv/mirror/github"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The default toolchain's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Per-host mirrors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_mirror_paths_stay_inside_git_dir() {
        let l = Layout::new("/h");
        assert_eq!(
            l.git_mirror("https://github.com/etcd-io/etcd"),
            PathBuf::from("/h/git/github.com/etcd-io/etcd.git")
        );
        assert_eq!(
            l.git_mirror("https://github.com/etcd-io/etcd.git/"),
            PathBuf::from("/h/git/github.com/etcd-io/etcd.git")
        );
        assert_eq!(
            l.git_mirror("git://127.0.0.1:9418/../../x"),
            PathBuf::from("/h/git/127.0.0.1_9418/_/_/x.git")
        );
        assert!(l.git_mirror("file:///tmp/repo").starts_with("/h/git"));
    }

    #[test]
    fn blob_paths_fan_out_by_prefix() {
        let d: Digest = format!("sha256:ab{}", "0".repeat(62)).parse().unwrap();
        let p = Layout::new("/h").blob_path(&d);
        assert_eq!(
            p,
            PathBuf::from(format!("/h/cache/blobs/sha256/ab/ab{}", "0".repeat(62)))
        );
    }

    #[test]
    fn settings_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        assert_eq!(l.settings().unwrap(), Settings::default());
        let mut s = Settings {
            default: Some("1.30".into()),
            ..Default::default()
        };
        s.mirrors
            .insert("dl.k8s.io".into(), "http://127.0.0.1:1".into());
        l.save_settings(&s).unwrap();
        assert_eq!(l.settings().unwrap(), s);
        std::fs::write(l.settings_path(), "default = [").unwrap();
        assert!(matches!(l.settings(), Err(StoreError::Settings { .. })));
    }
}
