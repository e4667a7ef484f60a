//! Deterministic `.tar.gz` written on every core.
//!
//! A worker's binaries weigh ≈ 250 MB; gzip on one core takes tens of seconds for them. The tar
//! stream is cut into fixed [`BLOCK_SIZE`] blocks, each block is compressed on its own thread as
//! a complete gzip member, and the members are written in order. A file of several gzip members
//! is plain gzip (RFC 1952 §2.2): `gzip -d`, `gzip -t`, `tar xzf`, Python's `tarfile` and Go's
//! `compress/gzip` all read it as one stream.
//!
//! The bytes depend only on the entries: the tar headers are fixed (mtime 0, uid/gid 0, sorted
//! by the caller), every member has mtime 0 and the same level, and block boundaries fall every
//! [`BLOCK_SIZE`] bytes of the tar stream whatever the number of threads. Memory stays bounded:
//! at most [`pool_size`] blocks are in flight between the reader and the writer.
//!
//! ```text
//! files ─► tar stream ─► 1 MiB blocks ─┬─► gzip member ─┐
//!          (this thread)               ├─► gzip member ─┼─► in order ─► output (+ sha256)
//!                                      └─► …  N threads ┘   (writer thread)
//! ```

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest as _, Sha256};

use crate::fsx::PathIo;
use crate::manifest::Digest;

/// Bytes of tar stream per gzip member. Part of the output format: changing it changes every
/// bundle's bytes (bump [`FORMAT`] with it). 1 MiB keeps the loss from restarting the deflate
/// window (32 KiB) under 0.5 % and gives even 2 cores hundreds of blocks to share.
pub const BLOCK_SIZE: usize = 1 << 20;

/// The deflate level of every member (gzip's default). Part of the output format.
pub const LEVEL: u32 = 6;

/// The version of this output format (block size, level, header rules), for keys of caches
/// holding its output.
pub const FORMAT: &str = "kbin-tar-gz/1 block=1MiB level=6 mtime=0 uid=0 gid=0";

/// One file to put in a tarball: its path in the archive, its mode, and where its bytes are.
pub type Entry = (String, u32, PathBuf);

/// What [`write_tar_gz`] wrote.
#[derive(Debug)]
pub struct Output<W> {
    /// The writer, given back (to sync or persist it).
    pub out: W,
    /// sha256 of the bytes written.
    pub sha256: Digest,
    /// Their number.
    pub size: u64,
}

/// How many threads compress: one per core. (A pipeline, not a map: blocks stream from the tar
/// writer through the compressors to one writer in order, so it keeps its own threads and
/// channels rather than [`crate::util::parallel_map`].)
pub fn threads() -> usize {
    crate::util::cores()
}

/// Blocks in flight at most for `threads` compressing threads: one being compressed and one
/// queued per thread, plus a little room for a block finished out of order.
pub fn pool_size(threads: usize) -> usize {
    2 * threads + 2
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the compressing threads stopped")
}

/// The tar stream's sink: fills a block, hands it to the compressors when full, and takes an
/// empty one from the pool (waiting while the pool is empty, which bounds memory).
struct Blocks<'a> {
    cur: Vec<u8>,
    seq: u64,
    jobs: SyncSender<(u64, Vec<u8>)>,
    free: &'a Receiver<Vec<u8>>,
}

impl Blocks<'_> {
    fn send(&mut self) -> io::Result<()> {
        let mut next = self.free.recv().map_err(|_| broken())?;
        next.clear();
        next.reserve_exact(BLOCK_SIZE);
        let full = std::mem::replace(&mut self.cur, next);
        self.jobs.send((self.seq, full)).map_err(|_| broken())?;
        self.seq += 1;
        Ok(())
    }
}

impl Write for Blocks<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK_SIZE - self.cur.len());
        self.cur.extend_from_slice(&buf[..n]);
        if self.cur.len() == BLOCK_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A block compressed as one gzip member (mtime 0, no name: the same bytes on every machine).
fn member(block: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(block.len() / 2 + 64),
        flate2::Compression::new(LEVEL),
    );
    gz.write_all(block)?;
    gz.finish()
}

type Done = (u64, Vec<u8>, io::Result<Vec<u8>>);

fn compress_blocks(jobs: &Mutex<Receiver<(u64, Vec<u8>)>>, done: SyncSender<Done>) {
    loop {
        // The lock is held only while waiting for a job, so threads take blocks in turn.
        let job = jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok((seq, block)) = job else { return };
        let z = member(&block);
        if done.send((seq, block, z)).is_err() {
            return;
        }
    }
}

/// Write members in sequence order as they arrive, hashing them; each written block's buffer
/// goes back to the pool.
fn write_in_order<W: Write>(
    mut out: W,
    done: Receiver<Done>,
    free: SyncSender<Vec<u8>>,
    path: &Path,
) -> Result<Output<W>, PathIo> {
    let fail = |source| PathIo {
        action: "cannot write",
        path: path.to_owned(),
        source,
    };
    let mut pending: BTreeMap<u64, (Vec<u8>, io::Result<Vec<u8>>)> = BTreeMap::new();
    let mut next = 0u64;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for (seq, block, z) in done {
        pending.insert(seq, (block, z));
        while let Some((block, z)) = pending.remove(&next) {
            let z = z.map_err(fail)?;
            out.write_all(&z).map_err(fail)?;
            hasher.update(&z);
            size += z.len() as u64;
            // The reader may be done and gone: then nobody needs the buffer.
            let _ = free.send(block);
            next += 1;
        }
    }
    out.flush().map_err(fail)?;
    Ok(Output {
        out,
        sha256: Digest::sha256_of(&hasher.finalize()),
        size,
    })
}

/// Append every entry to a deterministic tar stream written into `sink`.
fn tar_stream(sink: &mut dyn Write, entries: &[Entry], path: &Path) -> Result<(), PathIo> {
    let mut tar = tar::Builder::new(sink);
    tar.mode(tar::HeaderMode::Deterministic);
    for (rel, mode, src) in entries {
        let read_err = |action| {
            let src = src.clone();
            move |source| PathIo {
                action,
                path: src,
                source,
            }
        };
        let mut f = std::fs::File::open(src).map_err(read_err("cannot open"))?;
        let len = f.metadata().map_err(read_err("cannot stat"))?.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, rel, &mut f).map_err(|source| {
            // A stopped pipeline is the writer's error, reported by the caller.
            if source.kind() == io::ErrorKind::BrokenPipe {
                PathIo {
                    action: "cannot write",
                    path: path.to_owned(),
                    source,
                }
            } else {
                read_err("cannot archive")(source)
            }
        })?;
    }
    tar.finish().map_err(|source| PathIo {
        action: "cannot write",
        path: path.to_owned(),
        source,
    })
}

/// Write a deterministic `.tar.gz` of `entries` (sorted by the caller) into `out` on
/// [`threads`] threads; `path` names the output in errors. Returns the writer, the sha256 and
/// the size of what was written.
pub fn write_tar_gz<W: Write + Send>(
    out: W,
    entries: &[Entry],
    path: &Path,
) -> Result<Output<W>, PathIo> {
    write_tar_gz_on(out, entries, path, threads())
}

/// [`write_tar_gz`] on `threads` compressing threads (the bytes do not depend on it).
pub fn write_tar_gz_on<W: Write + Send>(
    out: W,
    entries: &[Entry],
    path: &Path,
    threads: usize,
) -> Result<Output<W>, PathIo> {
    // A node's configs and keys fit in a block or two: starting threads for each of a thousand
    // nodes would cost more than compressing them here.
    let small = entries
        .iter()
        .map(|(_, _, src)| std::fs::metadata(src).map_or(0, |m| m.len()))
        .sum::<u64>()
        < BLOCK_SIZE as u64;
    // Big ones stream through the pipeline even on one core, so memory stays bounded.
    if small {
        write_tar_gz_here(out, entries, path)
    } else {
        write_tar_gz_pipelined(out, entries, path, threads)
    }
}

/// The same bytes as [`write_tar_gz_pipelined`], on the calling thread: the whole tar stream in
/// memory, then one member per block.
fn write_tar_gz_here<W: Write>(
    mut out: W,
    entries: &[Entry],
    path: &Path,
) -> Result<Output<W>, PathIo> {
    let mut stream = Vec::new();
    tar_stream(&mut stream, entries, path)?;
    let fail = |source| PathIo {
        action: "cannot write",
        path: path.to_owned(),
        source,
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for block in stream.chunks(BLOCK_SIZE) {
        let z = member(block).map_err(fail)?;
        out.write_all(&z).map_err(fail)?;
        hasher.update(&z);
        size += z.len() as u64;
    }
    out.flush().map_err(fail)?;
    Ok(Output {
        out,
        sha256: Digest::sha256_of(&hasher.finalize()),
        size,
    })
}

/// Blocks compressed on `threads` threads, written in order by another (see the module docs).
fn write_tar_gz_pipelined<W: Write + Send>(
    out: W,
    entries: &[Entry],
    path: &Path,
    threads: usize,
) -> Result<Output<W>, PathIo> {
    let pool = pool_size(threads);
    let (jobs_tx, jobs_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
    let jobs_rx = Mutex::new(jobs_rx);
    let (done_tx, done_rx) = sync_channel::<Done>(threads);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(pool);
    // One block is always being filled, so the pool holds the rest.
    for _ in 1..pool {
        free_tx.send(Vec::new()).expect("the pool has room for it");
    }
    std::thread::scope(|s| {
        let writer = s.spawn(move || write_in_order(out, done_rx, free_tx, path));
        for _ in 0..threads {
            let done = done_tx.clone();
            let jobs = &jobs_rx;
            s.spawn(move || compress_blocks(jobs, done));
        }
        drop(done_tx);
        let mut blocks = Blocks {
            cur: Vec::with_capacity(BLOCK_SIZE),
            seq: 0,
            jobs: jobs_tx,
            free: &free_rx,
        };
        let produced = tar_stream(&mut blocks, entries, path).and_then(|()| {
            if blocks.cur.is_empty() {
                return Ok(());
            }
            let last = std::mem::take(&mut blocks.cur);
            blocks.jobs.send((blocks.seq, last)).map_err(|_| PathIo {
                action: "cannot write",
                path: path.to_owned(),
                source: broken(),
            })
        });
        // Closing the job queue lets the compressors, then the writer, finish.
        drop(blocks);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The writer's own error explains a stopped pipeline better than the reader's.
        let written = written?;
        produced?;
        Ok(written)
    })
}

/// Write a deterministic `.tar.gz` of `entries` for `path` into a temp file beside it (0600 from
/// its creation, so keys inside are never exposed, then `mode`), returned for the caller's
/// [`crate::r#gen::Staged`] set to sync and rename with the rest of the tree.
pub fn write_temp(
    path: &Path,
    dir: &Path,
    entries: &[Entry],
    mode: u32,
) -> Result<(Output<()>, tempfile::TempPath), PathIo> {
    let at = |action, p: &Path| {
        let p = p.to_owned();
        move |source| PathIo {
            action,
            path: p,
            source,
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(at("cannot create a temporary file in", dir))?;
    // Members are hundreds of KB: written straight to the file, no buffer needed.
    let Output { sha256, size, .. } = write_tar_gz(tmp.as_file(), entries, path)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(at("cannot set the mode of", path))?;
    // Synced and renamed by the caller's staged commit, with the rest of the tree.
    Ok((
        Output {
            out: (),
            sha256,
            size,
        },
        tmp.into_temp_path(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Files spanning several blocks: compressible text, then bytes from a simple generator (so
    /// members differ), in sizes that end mid-block.
    fn fixture(dir: &Path) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (i, (name, size, mode)) in [
            ("usr/local/bin/big", 3 * BLOCK_SIZE + 12_345, 0o755),
            ("etc/kubernetes/pki/ca.key", 227, 0o600),
            ("opt/cni/bin/empty", 0, 0o644),
        ]
        .into_iter()
        .enumerate()
        {
            let mut x = 0x9e37_79b9_u32.wrapping_mul(i as u32 + 1);
            let bytes: Vec<u8> = (0..size)
                .map(|j| {
                    if j % 4096 < 2048 {
                        b"kubelet "[j % 8]
                    } else {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    }
                })
                .collect();
            let src = dir.join(format!("src-{i}"));
            std::fs::write(&src, bytes).unwrap();
            entries.push((name.to_owned(), mode, src));
        }
        entries.sort();
        entries
    }

    #[test]
    fn parallel_tarball_is_read_by_real_tar_and_gzip_with_contents_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let entries = fixture(d.path());
        let path = d.path().join("out/b.tar.gz");
        std::fs::create_dir(d.path().join("out")).unwrap();
        let (w, tmp) = write_temp(&path, d.path(), &entries, 0o600).unwrap();
        tmp.persist(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(w.size, bytes.len() as u64);
        assert_eq!(w.sha256, Digest::sha256_of(&Sha256::digest(&bytes)));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Several members: one per started block of the tar stream.
        let members = bytes
            .windows(4)
            .filter(|w| w == &[0x1f, 0x8b, 8, 0])
            .count();
        assert!(members >= 4, "{members} gzip members");

        let t = Command::new("gzip").arg("-t").arg(&path).status().unwrap();
        assert!(t.success(), "gzip -t");
        let x = d.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let t = Command::new("tar")
            .arg("-C")
            .arg(&x)
            .arg("-xzf")
            .arg(&path)
            .status()
            .unwrap();
        assert!(t.success(), "tar xzf");
        for (rel, mode, src) in &entries {
            let got = x.join(rel);
            assert_eq!(
                std::fs::read(&got).unwrap(),
                std::fs::read(src).unwrap(),
                "{rel}"
            );
            let m = std::fs::metadata(&got).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, *mode, "{rel}");
        }
    }

    #[test]
    fn bytes_do_not_depend_on_the_number_of_threads() {
        let d = tempfile::tempdir().unwrap();
        let entries = fixture(d.path());
        let p = d.path().join("b.tar.gz");
        let mut runs: Vec<Vec<u8>> = [1, 2, 3, 8]
            .into_iter()
            .map(|n| write_tar_gz_on(Vec::new(), &entries, &p, n).unwrap().out)
            .collect();
        runs.push(write_tar_gz_here(Vec::new(), &entries, &p).unwrap().out);
        assert!(runs.windows(2).all(|w| w[0] == w[1]));
        // Small tarballs (a node's) are made on the calling thread: the same bytes again.
        let small = &entries[..1];
        assert!(std::fs::metadata(&small[0].2).unwrap().len() < BLOCK_SIZE as u64);
        assert_eq!(
            write_tar_gz_here(Vec::new(), small, &p).unwrap().out,
            write_tar_gz_pipelined(Vec::new(), small, &p, 2)
                .unwrap()
                .out
        );
    }

    #[test]
    fn unreadable_entry_names_the_file_and_leaves_no_output() {
        let d = tempfile::tempdir().unwrap();
        let mut entries = fixture(d.path());
        entries.push(("zz".into(), 0o644, d.path().join("no-such-file")));
        let path = d.path().join("out/b.tar.gz");
        std::fs::create_dir(d.path().join("out")).unwrap();
        let e = write_temp(&path, d.path(), &entries, 0o644).unwrap_err();
        assert!(e.path.ends_with("no-such-file"), "{e}");
        assert_eq!(std::fs::read_dir(d.path().join("out")).unwrap().count(), 0);
    }
}
