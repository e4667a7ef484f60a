//! Safe extraction against archives built here with the tar crate's low-level header API,
//! malicious ones included.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use kbin::archive::{ArchiveError, Limits, extract_members, extract_tar_gz};
use sha2::Digest as _;
use tar::{EntryType, Header};

/// One entry to put in a test archive; names and link targets are written raw, unchecked.
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Special(&'a str, EntryType),
}

fn raw_header(name: &str, kind: EntryType, size: u64, mode: u32) -> Header {
    let mut h = Header::new_old();
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

fn build(path: &Path, entries: &[E<'_>]) {
    let gz = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let (mut h, data): (Header, &[u8]) = match e {
            E::File(n, d, m) => (raw_header(n, EntryType::Regular, d.len() as u64, *m), d),
            E::Dir(n) => (raw_header(n, EntryType::Directory, 0, 0o755), &[]),
            E::Symlink(n, t) | E::Hardlink(n, t) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                };
                let mut h = raw_header(n, kind, 0, 0o777);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                (h, &[])
            }
            E::Special(n, k) => (raw_header(n, *k, 0, 0o644), &[]),
        };
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// A scratch area: `work/` holds the archive and the target's parent; `outside/` must stay
/// empty whatever the archive says.
struct Scratch {
    _dir: tempfile::TempDir,
    work: PathBuf,
    outside: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        // Deep enough that `../../..` from the target still lands inside the scratch dir.
        let work = dir.path().join("a/b/c/work");
        let outside = dir.path().join("a/b/c/outside");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        Scratch {
            _dir: dir,
            work,
            outside,
        }
    }
    fn archive(&self, entries: &[E<'_>]) -> PathBuf {
        let p = self.work.join("x.tar.gz");
        build(&p, entries);
        p
    }
    fn target(&self) -> PathBuf {
        self.work.join("trees/t")
    }
    /// Everything under the scratch dir except the archive, the (empty) `trees/` and
    /// `outside/` dirs themselves.
    fn stray_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self
            .work
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap();
        walk(root, &mut out);
        out.retain(|p| {
            !(p.ends_with("x.tar.gz")
                || p.ends_with("work/trees")
                || p.ends_with("c/outside")
                || p.ends_with("c/work")
                || p.ends_with("a/b/c")
                || p.ends_with("a/b")
                || p.ends_with("/a"))
        });
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

/// Extract, expect a refusal, and check that nothing was written anywhere.
fn assert_refused(s: &Scratch, entries: &[E<'_>], what: &str) -> ArchiveError {
    let archive = s.archive(entries);
    let err = extract_tar_gz(&archive, &s.target(), &Limits::default())
        .expect_err(&format!("{what} must be refused"));
    assert!(!s.target().exists(), "{what}: the target must not appear");
    assert_eq!(
        s.stray_files(),
        Vec::<PathBuf>::new(),
        "{what}: nothing may be left behind"
    );
    assert!(
        std::fs::read_dir(&s.outside).unwrap().next().is_none(),
        "{what}: nothing written outside"
    );
    // Taking members from it is refused too.
    let out = s.work.join("members");
    assert!(
        extract_members(&archive, &["ok"], &out, &Limits::default()).is_err(),
        "{what}: extract_members must refuse it as well"
    );
    let _ = std::fs::remove_dir_all(&out);
    err
}

#[test]
fn a_normal_archive_is_extracted_whole() {
    let s = Scratch::new();
    let archive = s.archive(&[
        E::Dir("./"),
        E::Dir("etcd-v3.5.16-linux-amd64/"),
        E::File("etcd-v3.5.16-linux-amd64/etcd", b"etcd binary", 0o755),
        E::File("etcd-v3.5.16-linux-amd64/README.md", b"readme", 0o644),
        E::Dir("etcd-v3.5.16-linux-amd64/Documentation/dev"),
        E::Symlink(
            "etcd-v3.5.16-linux-amd64/Documentation/dev/readme",
            "../../README.md",
        ),
        E::Hardlink(
            "etcd-v3.5.16-linux-amd64/etcd-copy",
            "etcd-v3.5.16-linux-amd64/etcd",
        ),
        E::File("./bin/bridge", b"cni", 0o755),
    ]);
    let done = extract_tar_gz(&archive, &s.target(), &Limits::default()).unwrap();
    assert_eq!(done.files, 4);
    // A hardlink shares its target's bytes: they are written once.
    assert_eq!(done.bytes, (11 + 6 + 3) as u64);
    let t = s.target();
    let etcd = t.join("etcd-v3.5.16-linux-amd64/etcd");
    assert_eq!(std::fs::read(&etcd).unwrap(), b"etcd binary");
    assert_eq!(
        std::fs::metadata(&etcd).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read(t.join("etcd-v3.5.16-linux-amd64/Documentation/dev/readme")).unwrap(),
        b"readme"
    );
    assert_eq!(
        std::fs::read(t.join("etcd-v3.5.16-linux-amd64/etcd-copy")).unwrap(),
        b"etcd binary"
    );
    assert_eq!(std::fs::read(t.join("bin/bridge")).unwrap(), b"cni");
    assert_eq!(
        std::fs::metadata(&t).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // No staging directory is left next to the tree.
    let names: Vec<_> = std::fs::read_dir(t.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("t")]);
}

#[test]
fn an_existing_tree_is_kept_when_another_extraction_wins() {
    let s = Scratch::new();
    let archive = s.archive(&[E::File("f", b"new", 0o644)]);
    std::fs::create_dir_all(s.target()).unwrap();
    std::fs::write(s.target().join("f"), b"first").unwrap();
    extract_tar_gz(&archive, &s.target(), &Limits::default()).unwrap();
    assert_eq!(std::fs::read(s.target().join("f")).unwrap(), b"first");
    assert_eq!(std::fs::read_dir(s.work.join("trees")).unwrap().count(), 1);
}

#[test]
fn dot_dot_entries_are_refused() {
    let s = Scratch::new();
    let err = assert_refused(&s, &[E::File("../x", b"evil", 0o644)], "../x");
    assert!(matches!(err, ArchiveError::Unsafe { .. }), "{err:?}");
    assert!(err.to_string().contains("../x"), "{err}");
    assert_refused(
        &s,
        &[
            E::File("ok", b"fine", 0o644),
            E::File("d/../../../outside/x", b"evil", 0o644),
        ],
        "a nested .. that climbs out",
    );
}

#[test]
fn absolute_paths_are_refused() {
    let s = Scratch::new();
    let abs = s.outside.join("abs");
    let err = assert_refused(
        &s,
        &[E::File(abs.to_str().unwrap(), b"evil", 0o644)],
        "an absolute path",
    );
    assert!(err.to_string().contains("absolute"), "{err}");
    assert!(!abs.exists());
}

#[test]
fn symlinks_pointing_outside_are_refused() {
    let s = Scratch::new();
    let err = assert_refused(
        &s,
        &[E::Symlink("escape", "../../outside")],
        "a symlink climbing out",
    );
    assert!(err.to_string().contains("outside"), "{err}");
    let outside = s.outside.to_str().unwrap().to_owned();
    assert_refused(
        &s,
        &[E::Symlink("abs", &outside)],
        "a symlink to an absolute path",
    );
    // The classic two-step: a link, then a file written through it.
    let err = assert_refused(
        &s,
        &[
            E::Dir("inner"),
            E::Symlink("link", "inner"),
            E::File("link/x", b"through the link", 0o644),
        ],
        "a file written through a symlink",
    );
    assert!(err.to_string().contains("symlink"), "{err}");
    // `..` after a name (could resolve through another symlink) is refused.
    assert_refused(
        &s,
        &[E::Symlink("self", "."), E::Symlink("up", "self/self/../..")],
        "a symlink with .. after a name",
    );
}

#[test]
fn hardlinks_pointing_outside_are_refused() {
    let s = Scratch::new();
    let victim = s.outside.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let err = assert_refused_keeping(&s, &[E::Hardlink("h", "../../outside/victim")], &victim);
    assert!(err.to_string().contains("hardlink"), "{err}");
    assert_refused_keeping(&s, &[E::Hardlink("h", victim.to_str().unwrap())], &victim);
    // A hardlink to a symlink that points elsewhere is not followed.
    assert_refused_keeping(
        &s,
        &[E::Dir("d"), E::Symlink("s", "d"), E::Hardlink("h", "s")],
        &victim,
    );
}

/// Like [`assert_refused`] when `outside/` holds a file that must survive untouched.
fn assert_refused_keeping(s: &Scratch, entries: &[E<'_>], victim: &Path) -> ArchiveError {
    let archive = s.archive(entries);
    let err = extract_tar_gz(&archive, &s.target(), &Limits::default()).unwrap_err();
    assert!(!s.target().exists());
    assert_eq!(std::fs::read(victim).unwrap(), b"precious");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(victim).unwrap().nlink(),
        1,
        "no new link to it"
    );
    let out = s.work.join("members");
    assert!(extract_members(&archive, &["h"], &out, &Limits::default()).is_err());
    let _ = std::fs::remove_dir_all(&out);
    err
}

#[test]
fn device_files_and_fifos_are_refused() {
    let s = Scratch::new();
    for (kind, name) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let err = assert_refused(
            &s,
            &[E::File("ok", b"x", 0o644), E::Special("dev", kind)],
            name,
        );
        assert!(matches!(err, ArchiveError::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn unpacked_size_and_entry_count_are_capped() {
    let s = Scratch::new();
    let big = vec![0u8; 64 << 10];
    let archive = s.archive(&[E::File("a", &big, 0o644), E::File("b", &big, 0o644)]);
    let small = Limits {
        max_bytes: 100 << 10,
        ..Limits::default()
    };
    let err = extract_tar_gz(&archive, &s.target(), &small).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err:?}");
    assert!(!s.target().exists());
    assert_eq!(s.stray_files(), Vec::<PathBuf>::new());
    let err = extract_members(&archive, &["a", "b"], &s.work.join("m"), &small).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err:?}");

    let few = Limits {
        max_entries: 1,
        ..Limits::default()
    };
    let err = extract_tar_gz(&archive, &s.target(), &few).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooManyEntries { .. }),
        "{err:?}"
    );
    assert!(!s.target().exists());
    // Within the limits it works.
    extract_tar_gz(&archive, &s.target(), &Limits::default()).unwrap();
}

#[test]
fn corrupt_archives_are_an_error() {
    let s = Scratch::new();
    let p = s.work.join("bad.tar.gz");
    std::fs::write(&p, b"this is not gzip").unwrap();
    let err = extract_tar_gz(&p, &s.target(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.tar.gz"), "{err}");
    assert!(!s.target().exists());
    // Truncated mid-file.
    let good = s.archive(&[E::File("f", &vec![7u8; 300_000], 0o644)]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert!(extract_tar_gz(&p, &s.target(), &Limits::default()).is_err());
    assert!(!s.target().exists());
}

#[test]
fn named_members_are_taken_alone_and_hashed() {
    let s = Scratch::new();
    let archive = s.archive(&[
        E::Dir("kubernetes/server/bin"),
        E::File("kubernetes/server/bin/kubectl", b"kubectl!", 0o755),
        E::File("kubernetes/server/bin/kubelet", b"kubelet!", 0o755),
        E::File("kubernetes/server/bin/kube-proxy.tar", b"image", 0o644),
        E::File("./bridge", b"bridge", 0o755),
        E::Symlink("kubernetes/server/bin/k", "kubectl"),
    ]);
    let out = s.work.join("members");
    let got = extract_members(
        &archive,
        &["kubernetes/server/bin/kubectl", "./bridge", "not/there"],
        &out,
        &Limits::default(),
    )
    .unwrap();
    let names: Vec<_> = got.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["kubernetes/server/bin/kubectl", "bridge"]);
    let kubectl = &got[0];
    assert_eq!(kubectl.path, out.join("kubernetes/server/bin/kubectl"));
    assert_eq!(std::fs::read(&kubectl.path).unwrap(), b"kubectl!");
    assert_eq!(kubectl.size, 8);
    assert_eq!(kubectl.mode, 0o755);
    assert_eq!(
        kubectl.sha256.hex(),
        hex::encode(sha2::Sha256::digest(b"kubectl!"))
    );
    assert!(!out.join("kubernetes/server/bin/kubelet").exists());
    assert!(!out.join("kubernetes/server/bin/kube-proxy.tar").exists());
    // A member that is a link is named as such.
    let err = extract_members(
        &archive,
        &["kubernetes/server/bin/k"],
        &s.work.join("m2"),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::NotAFile { .. }), "{err:?}");
    // Asking for an escaping member name is refused before reading.
    let err =
        extract_members(&archive, &["../x"], &s.work.join("m3"), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Unsafe { .. }), "{err:?}");
}

#[test]
fn an_entry_naming_the_target_itself_is_refused_by_both_extractions() {
    // Found by fuzz/harness.rs: extract_members used to accept these.
    let s = Scratch::new();
    for name in [".", "./", "a/.."] {
        let err = assert_refused(
            &s,
            &[E::File("ok", b"x", 0o755), E::File(name, b"y", 0o644)],
            name,
        );
        assert!(err.to_string().contains("target directory itself"), "{err}");
    }
}

#[test]
fn a_file_over_a_directory_is_refused_by_both_extractions() {
    // Found by fuzz/harness.rs: a directory entry, or one made for a deeper entry, then a
    // file or link of the same name.
    let s = Scratch::new();
    let cases: [&[E<'_>]; 3] = [
        &[E::Dir("bin/"), E::File("bin", b"x", 0o755)],
        &[E::File("bin/ctr", b"x", 0o755), E::File("bin", b"y", 0o755)],
        &[E::File("bin/ctr", b"x", 0o755), E::Symlink("bin", "ctr")],
    ];
    for entries in cases {
        let err = assert_refused(&s, entries, "a file over a directory");
        assert!(err.to_string().contains("replace a directory"), "{err}");
    }
}

/// A .tar.gz holding a GNU long-name record of `len` bytes, then a small file.
fn long_name_bomb(path: &Path, len: u64) {
    use std::io::{Read as _, Write as _};
    let gz = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
    let mut b = tar::Builder::new(gz);
    // A GNU header: tar only reads long names from GNU or ustar headers.
    let mut h = Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(len);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, std::io::repeat(b'a').take(len)).unwrap();
    let mut h = raw_header("ok", EntryType::Regular, 1, 0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let mut gz = b.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap();
}

#[test]
fn a_long_name_bomb_is_refused_before_it_is_read_into_memory() {
    // tar reads a long name whole; 64 MB of name (64 KB compressed) must stop at the 1 MiB cap
    // on tar's records, under the default limits.
    let s = Scratch::new();
    let archive = s.work.join("x.tar.gz");
    long_name_bomb(&archive, 64 << 20);
    assert!(std::fs::metadata(&archive).unwrap().len() < 1 << 20);
    let err = extract_tar_gz(&archive, &s.target(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Records { limit, .. } if limit == kbin::archive::META_MAX),
        "{err:?}"
    );
    assert!(!s.target().exists());
    assert_eq!(s.stray_files(), Vec::<PathBuf>::new());
    let err =
        extract_members(&archive, &["ok"], &s.work.join("m"), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Records { .. }), "{err:?}");
    assert!(err.to_string().contains("tar records"), "{err}");
    // A long name of a real length still works: it names the file after it.
    long_name_bomb(&archive, 200);
    let done = extract_tar_gz(&archive, &s.target(), &Limits::default()).unwrap();
    assert_eq!(done.files, 1);
    assert!(s.target().join("a".repeat(200)).is_file());
}

#[test]
fn a_gzip_bomb_in_a_member_not_asked_for_is_refused() {
    // 32 MB of zeros (32 KB compressed) that extract_members would only read past: it still
    // counts against the unpacked size.
    let s = Scratch::new();
    let zeros = vec![0u8; 32 << 20];
    let archive = s.archive(&[E::File("bomb", &zeros, 0o644), E::File("ok", b"x", 0o755)]);
    let small = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = extract_members(&archive, &["ok"], &s.work.join("m"), &small).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err:?}");
    let got = extract_members(&archive, &["ok"], &s.work.join("m2"), &Limits::default()).unwrap();
    assert_eq!(got.len(), 1);
}
