//! The partial file of a download and its running digests, on a blocking thread.
//!
//! The network task hands over batches of received chunks (`Bytes`, no copy); this thread hashes
//! each chunk and writes each batch with one vectored write, so receiving, hashing and writing overlap and
//! the async runtime never blocks on the disk. The digests always describe exactly the bytes in
//! the file, which is what makes resuming (append to the file, keep hashing) correct.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest as _, Sha256, Sha512};
use tokio::sync::{mpsc, oneshot};

use super::FetchError;
use crate::manifest::Digest;

/// Buffered bytes between the network and the disk, per download: enough to smooth the disk's
/// hiccups, small enough for four concurrent downloads to stay far below the RSS budget.
const QUEUE_BATCHES: usize = 4;
/// Read buffer size when re-hashing an existing partial file.
const READ_BUF: usize = 1 << 20;

/// sha256 always, sha512 when asked: fed the same bytes.
pub(crate) struct Hashers {
    sha256: Sha256,
    sha512: Option<Sha512>,
}

impl Hashers {
    pub(crate) fn new(sha512: bool) -> Self {
        Hashers {
            sha256: Sha256::new(),
            sha512: sha512.then(Sha512::new),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(h) = &mut self.sha512 {
            h.update(bytes);
        }
    }

    pub(crate) fn finish(self) -> (Digest, Option<Digest>) {
        (
            Digest::sha256_of(&self.sha256.finalize()),
            self.sha512.map(|h| Digest::sha512_of(&h.finalize())),
        )
    }
}

/// sha512 on its own thread, fed the same chunks as the sha256 (sha512 runs at about a third
/// of sha256's speed with SHA-NI; in parallel, a sha512-pinned download costs little more
/// than a sha256 one).
struct Sha512Thread {
    tx: std::sync::mpsc::SyncSender<Side>,
    handle: std::thread::JoinHandle<Sha512>,
}

enum Side {
    Data(Vec<Bytes>),
    Reset,
}

impl Sha512Thread {
    fn start(mut h: Sha512) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Side>(QUEUE_BATCHES);
        let handle = std::thread::Builder::new()
            .name("kbin-sha512".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Side::Data(chunks) => chunks.iter().for_each(|c| h.update(c)),
                        Side::Reset => h = Sha512::new(),
                    }
                }
                h
            })?;
        Ok(Sha512Thread { tx, handle })
    }

    /// Send to the thread; false if it is gone (it panicked: reported at finish).
    fn send(&self, msg: Side) -> bool {
        self.tx.send(msg).is_ok()
    }

    fn finish(self) -> Option<Digest> {
        drop(self.tx);
        let h = self.handle.join().ok()?;
        Some(Digest::sha512_of(&h.finalize()))
    }
}

/// The finished file's digests and size.
pub(crate) struct Finished {
    pub(crate) size: u64,
    pub(crate) sha256: Digest,
    pub(crate) sha512: Option<Digest>,
}

enum Cmd {
    /// Hash and append these chunks.
    Data(Vec<Bytes>),
    /// Empty the file and start the digests over (the server ignored our Range).
    Reset,
    /// Flush, fsync, and answer with the digests; the thread then ends.
    Finish(oneshot::Sender<Result<Finished, FetchError>>),
    /// Flush and answer with the file's length.
    Sync(oneshot::Sender<Result<u64, FetchError>>),
}

struct State {
    path: PathBuf,
    out: File,
    /// sha256 (sha512 lives in `side` once the prefix is hashed).
    hashers: Hashers,
    side: Option<Sha512Thread>,
    len: u64,
    /// Disk writes started as the file grows, so that `finish`'s fsync has little left.
    writeback: crate::fsx::Writeback,
    /// The first write error; reported at the next Sync or Finish.
    failed: Option<std::io::Error>,
}

/// [`crate::fsx::at`] into this module's error (so `?` needs no type annotation).
fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    crate::fsx::at(action, path)
}

impl State {
    /// Open (or create) `path` and hash what it already holds.
    fn open(path: &Path, sha512: bool) -> Result<State, FetchError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err("cannot open", path))?;
        let mut hashers = Hashers::new(sha512);
        let mut len = 0u64;
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = file.read(&mut buf).map_err(io_err("cannot read", path))?;
            if n == 0 {
                break;
            }
            hashers.update(&buf[..n]);
            len += n as u64;
        }
        file.seek(SeekFrom::End(0))
            .map_err(io_err("cannot seek", path))?;
        let side = match hashers.sha512.take() {
            Some(h) => Some(
                Sha512Thread::start(h)
                    .map_err(io_err("cannot start a hashing thread for", path))?,
            ),
            None => None,
        };
        Ok(State {
            path: path.to_owned(),
            out: file,
            hashers,
            side,
            len,
            writeback: crate::fsx::Writeback::from(len),
            failed: None,
        })
    }

    fn data(&mut self, chunks: Vec<Bytes>) {
        if self.failed.is_some() {
            return;
        }
        if let Some(side) = &self.side {
            side.send(Side::Data(chunks.clone()));
        }
        for c in &chunks {
            self.hashers.update(c);
        }
        // One vectored write per batch: no copy into a buffer, few syscalls.
        let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.out.write_vectored(rest) {
                Ok(0) => {
                    self.failed = Some(std::io::ErrorKind::WriteZero.into());
                    return;
                }
                Ok(n) => {
                    self.len += n as u64;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
        self.writeback.wrote(&self.out, self.len);
    }

    fn check(&mut self) -> Result<(), FetchError> {
        if let Some(e) = self.failed.take() {
            return Err(io_err("cannot write", &self.path)(e));
        }
        self.out.flush().map_err(io_err("cannot write", &self.path))
    }

    fn reset(&mut self) {
        let r = self
            .out
            .set_len(0)
            .and_then(|()| self.out.seek(SeekFrom::Start(0)).map(|_| ()));
        if let Err(e) = r {
            self.failed.get_or_insert(e);
        }
        self.hashers = Hashers::new(false);
        if let Some(side) = &self.side {
            side.send(Side::Reset);
        }
        self.len = 0;
        self.writeback = crate::fsx::Writeback::default();
    }

    fn finish(mut self) -> Result<Finished, FetchError> {
        self.check()?;
        self.out
            .sync_all()
            .map_err(io_err("cannot sync", &self.path))?;
        let (sha256, _) = self.hashers.finish();
        let sha512 = match self.side.take() {
            Some(side) => Some(side.finish().ok_or_else(|| {
                io_err("cannot hash", &self.path)(std::io::Error::other(
                    "the sha512 thread panicked",
                ))
            })?),
            None => None,
        };
        Ok(Finished {
            size: self.len,
            sha256,
            sha512,
        })
    }
}

/// The handle the network task writes through.
pub(crate) struct Sink {
    tx: mpsc::Sender<Cmd>,
    /// Bytes in the file once every command sent so far is processed.
    len: u64,
    /// Bytes that were in the file when it was opened.
    pub(crate) initial: u64,
}

impl Sink {
    /// Open `path` (creating it if needed) and hash its current content, on a blocking thread.
    pub(crate) async fn open(path: &Path, sha512: bool) -> Result<Sink, FetchError> {
        let (tx, mut rx) = mpsc::channel::<Cmd>(QUEUE_BATCHES);
        let (ready_tx, ready_rx) = oneshot::channel();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut state = match State::open(&path, sha512) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(s.len));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Some(cmd) = rx.blocking_recv() {
                match cmd {
                    Cmd::Data(chunks) => state.data(chunks),
                    Cmd::Reset => state.reset(),
                    Cmd::Sync(reply) => {
                        let _ = reply.send(state.check().map(|()| state.len));
                    }
                    Cmd::Finish(reply) => {
                        let _ = reply.send(state.finish());
                        return;
                    }
                }
            }
        });
        let initial = ready_rx.await.map_err(|_| gone())??;
        Ok(Sink {
            tx,
            len: initial,
            initial,
        })
    }

    /// Bytes in the file once everything sent so far is written.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Append a batch of chunks.
    pub(crate) async fn write(&mut self, chunks: Vec<Bytes>) -> Result<(), FetchError> {
        let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        self.tx.send(Cmd::Data(chunks)).await.map_err(|_| gone())?;
        self.len += n;
        Ok(())
    }

    /// Empty the file and restart the digests.
    pub(crate) async fn reset(&mut self) -> Result<(), FetchError> {
        self.tx.send(Cmd::Reset).await.map_err(|_| gone())?;
        self.len = 0;
        Ok(())
    }

    /// Wait until everything sent is written; report a write error if one happened.
    pub(crate) async fn sync(&mut self) -> Result<u64, FetchError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Sync(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Flush, fsync, and return the digests and size.
    pub(crate) async fn finish(self) -> Result<Finished, FetchError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Finish(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// The writer thread ended without answering: it panicked.
fn gone() -> FetchError {
    FetchError::Io(crate::fsx::PathIo {
        action: "the download writer thread stopped while writing",
        path: PathBuf::new(),
        source: std::io::Error::other("writer thread ended"),
    })
}
