//! git's smart HTTP protocol through kbin's own HTTP client (reqwest on rustls), registered with
//! libgit2 for `http://` and `https://` remotes.
//!
//! libgit2 is then built without OpenSSL and libssh2: clones and downloads share one TLS stack,
//! one set of extra trust roots (`KBIN_CA_BUNDLE`) and one proxy configuration. The protocol is
//! gitprotocol-http(5)'s "smart" one: a GET of `info/refs?service=git-upload-pack` lists the
//! refs, then each negotiation round is one POST to `git-upload-pack` (stateless RPC). kbin only
//! fetches, so the receive-pack services are refused. The shape follows git2-curl, which cargo
//! uses to put libgit2 on curl.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Buf;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use reqwest::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};

use crate::fetch::{self, FetchOptions};

/// What git servers expect a client to call itself: some serve the smart protocol only to a
/// user agent that starts with `git/`.
const AGENT: &str = concat!("git/2.0 (kbin/", env!("CARGO_PKG_VERSION"), ")");

/// Register the transport for `http` and `https`, once per process. Call it before making a
/// remote: git2 asks that registration not race with the creation of transports.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["http", "https"] {
            // SAFETY: `Once` makes this run once, and every remote kbin makes is made after a
            // call to `register` has returned (source::git), so no transport is being created
            // while the table changes.
            if let Err(e) = unsafe { git2::transport::register(scheme, factory) } {
                tracing::warn!("cannot register kbin's {scheme} transport for git: {e}");
            }
        }
    });
}

fn factory(remote: &git2::Remote<'_>) -> Result<Transport, git2::Error> {
    Transport::smart(
        remote,
        true,
        Http {
            base: Arc::new(Mutex::new(None)),
            conn: Mutex::new(None),
        },
    )
}

/// One remote's connection: its base URL (updated when the refs request is redirected) and the
/// HTTP client with the runtime that drives it, made at the first request.
struct Http {
    base: Arc<Mutex<Option<String>>>,
    conn: Mutex<Option<Conn>>,
}

#[derive(Clone)]
struct Conn {
    rt: Arc<tokio::runtime::Runtime>,
    client: reqwest::Client,
    stall: Duration,
}

fn git_error(message: impl std::fmt::Display) -> git2::Error {
    git2::Error::from_str(&message.to_string())
}

impl Http {
    fn conn(&self) -> Result<Conn, git2::Error> {
        let mut conn = self.conn.lock().map_err(|_| git_error("poisoned lock"))?;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let opts = FetchOptions::from_env(None, Default::default());
        let client = fetch::client(&opts).map_err(|e| git_error(crate::util::chain(&e)))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| git_error(format!("cannot start the HTTP runtime: {e}")))?;
        let c = Conn {
            rt: Arc::new(rt),
            client,
            stall: opts.stall_timeout,
        };
        *conn = Some(c.clone());
        Ok(c)
    }
}

impl SmartSubtransport for Http {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let base = {
            let mut base = self.base.lock().map_err(|_| git_error("poisoned lock"))?;
            base.get_or_insert_with(|| url.trim_end_matches('/').to_owned())
                .clone()
        };
        let (url, post) = match action {
            Service::UploadPackLs => (format!("{base}/info/refs?service=git-upload-pack"), false),
            Service::UploadPack => (format!("{base}/git-upload-pack"), true),
            Service::ReceivePackLs | Service::ReceivePack => {
                return Err(git_error(format!(
                    "{base}: kbin only fetches, it never pushes"
                )));
            }
        };
        Ok(Box::new(Stream {
            conn: self.conn()?,
            base: self.base.clone(),
            url,
            post,
            body: Vec::new(),
            response: None,
            chunk: bytes::Bytes::new(),
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// One request: what libgit2 writes is the POST body, sent at the first read; reads stream the
/// response.
struct Stream {
    conn: Conn,
    base: Arc<Mutex<Option<String>>>,
    url: String,
    post: bool,
    body: Vec<u8>,
    response: Option<reqwest::Response>,
    chunk: bytes::Bytes,
}

impl Stream {
    fn send(&mut self) -> io::Result<reqwest::Response> {
        let c = &self.conn.client;
        let request = if self.post {
            c.post(&self.url)
                .header(CONTENT_TYPE, "application/x-git-upload-pack-request")
                .header(ACCEPT, "application/x-git-upload-pack-result")
                .body(std::mem::take(&mut self.body))
        } else {
            c.get(&self.url)
        };
        // The answer's headers wait no longer than a body chunk may: a server that accepts and
        // says nothing is a stall like any other.
        let stall = self.conn.stall;
        let sent = self.conn.rt.block_on(async {
            tokio::time::timeout(stall, request.header(USER_AGENT, AGENT).send()).await
        });
        let response = match sent {
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{}: no answer for {stall:?}", self.url),
                ));
            }
            Ok(r) => r.map_err(|e| {
                io::Error::other(format!("{}: {}", self.url, crate::util::chain(&e)))
            })?,
        };
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => {
                    ": kbin sends no credentials; clone the repository yourself and pass --source DIR"
                }
                _ => "",
            };
            return Err(io::Error::other(format!(
                "{}: HTTP {status}{hint}",
                self.url
            )));
        }
        if !self.post {
            let wanted = "application/x-git-upload-pack-advertisement";
            let got = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            if got != wanted {
                return Err(io::Error::other(format!(
                    "{} is not a git smart HTTP server (content type {got}, not {wanted}); \
                     the dumb HTTP protocol is not supported",
                    self.url
                )));
            }
            // A redirected refs request moves the whole repository: the POSTs follow it.
            let landed = response.url().as_str();
            if landed != self.url
                && let Some(moved) = landed.strip_suffix("/info/refs?service=git-upload-pack")
                && let Ok(mut base) = self.base.lock()
            {
                *base = Some(moved.to_owned());
            }
        }
        Ok(response)
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = out.len().min(self.chunk.len());
                out[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                return Ok(n);
            }
            let response = match self.response.as_mut() {
                Some(r) => r,
                None => {
                    let r = self.send()?;
                    self.response.insert(r)
                }
            };
            let next = self
                .conn
                .rt
                // Inside the runtime: the timer is made in its context.
                .block_on(async { tokio::time::timeout(self.conn.stall, response.chunk()).await });
            match next {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{}: no data for {:?}", self.url, self.conn.stall),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(io::Error::other(format!(
                        "{}: {}",
                        self.url,
                        crate::util::chain(&e)
                    )));
                }
                Ok(Ok(None)) => return Ok(0),
                Ok(Ok(Some(b))) => self.chunk = b,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
