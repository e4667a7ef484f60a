//! A real HTTP(S) server on 127.0.0.1 for tests: serves upstream-shaped paths from memory and
//! injects faults per path, counting what it serves.
//!
//! It runs on its own thread with its own tokio runtime, so it works the same from a plain
//! `#[test]` that runs the kbin binary and from a `#[tokio::test]` using the library. Dropping
//! the [`Server`] stops it (connections stalled on purpose are cut).
//!
//! ```ignore
//! mod common;
//! use common::server::{Fault, Server};
//!
//! let server = Server::start();
//! server.put("/release/v1.30.0/bin/linux/amd64/kubectl", b"binary bytes".to_vec());
//! server.fault("/release/v1.30.0/bin/linux/amd64/kubectl", Fault::Status(500)); // once
//! server.fault("/release/v1.30.0/bin/linux/amd64/kubectl", Fault::CutAfter(4)); // then once
//! // Point kbin at it: `--mirror {server.base()}` keeps the upstream path.
//! assert_eq!(server.requests("/release/v1.30.0/bin/linux/amd64/kubectl"), 0);
//! ```
//!
//! Faults: [`Server::fault`] queues a fault for the *next* request to that path (each queued
//! fault is used by one request, in order); [`Server::fault_always`] applies to every request
//! once the queue is empty (e.g. a permanent redirect, or a server that always stalls). Requests
//! with no fault left are served normally: 200 with the body (Content-Length set), or 206 for a
//! `Range: bytes=N-` / `bytes=N-M` request unless [`Server::ignore_range`] was called, 416 with
//! `Content-Range: bytes */LEN` when N is past the end, 404 for unknown paths.
//!
//! Counters per path: [`Server::requests`], [`Server::bytes_served`] (body bytes handed to the
//! connection), [`Server::ranges`] (the Range header of each request, in order), and
//! [`Server::total_requests`] / [`Server::total_bytes`] for the whole server.
//!
//! TLS: [`Server::start_tls`] with a [`TestCa`] serves https on 127.0.0.1 with a certificate
//! for `127.0.0.1` and `localhost` signed by a CA that only the test knows
//! ([`TestCa::ca_pem`]: write it to a file and hand it to kbin as KBIN_CA_BUNDLE).
//!
//! Driving kbin against it: point `--mirror` (or `KBIN_MIRROR`) at [`Server::base`] and `put`
//! files at their upstream paths (`/release/v1.30.14/bin/linux/amd64/kubectl`,
//! `/etcd-io/etcd/releases/download/v3.5.16/…`). For fast fault tests set
//! `KBIN_HTTP_BACKOFF_MS=10` and `KBIN_HTTP_STALL_TIMEOUT_MS=300` in the child's environment;
//! `KBIN_HTTP_RETRIES` sets the retries (default 4, i.e. 5 requests before giving up).
//!
//! The fetch API beyond /work/notes/FETCH-CONTRACT.md (extensions only, nothing renamed):
//! `FetchOptions` also has `proxy: ProxySettings` and `backoff`, and implements `Default`
//! (build it with `from_env` or `FetchOptions { .., ..Default::default() }`);
//! `FetchError::Certificate` (untrusted TLS certificate, not retried); `FetchError::hint()`
//! and `FetchError::target()`; `Downloaded::digest(algo)`. Errors after exhausted retries
//! keep a non-empty partial file (a rerun resumes); digest mismatches and length
//! contradictions delete it.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;

/// Bytes per body chunk on the normal path (large: the benchmark streams hundreds of MB).
const CHUNK: usize = 256 << 10;
/// How long a cut or lying response waits before closing, so that hyper has written every byte
/// it was given (it drops unflushed bytes when a body fails). Generous for a loaded machine.
const FLUSH_GRACE: Duration = Duration::from_millis(250);

/// A fault injected into one response (or every response, with [`Server::fault_always`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a short text body instead of the file.
    Status(u16),
    /// Send the headers and the first N body bytes (of what was asked, so after the Range
    /// start), then drop the connection.
    CutAfter(u64),
    /// Send the headers and the first N body bytes, then nothing, holding the connection open
    /// (a stalled server).
    StallAfter(u64),
    /// Never answer at all (no headers): the connection stays open, silent.
    Hang,
    /// Announce this Content-Length, whatever the body's real length; the real bytes follow and
    /// the connection closes after them. Applies to 200 and 206 answers.
    ContentLength(u64),
    /// Answer `302 Found` with this Location (absolute URL, e.g. another server's).
    Redirect(String),
    /// Serve normally but slowly: at most this many bytes per second (for tests that kill a
    /// client mid-download or watch progress).
    Slow(u64),
}

#[derive(Default)]
struct Entry {
    body: Option<Bytes>,
    queued: VecDeque<Fault>,
    always: Option<Fault>,
    ignore_range: bool,
    requests: usize,
    ranges: Vec<Option<String>>,
    served: Arc<AtomicU64>,
}

#[derive(Default)]
struct Shared {
    entries: BTreeMap<String, Entry>,
    total_requests: usize,
    total_bytes: Arc<AtomicU64>,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(s: &SharedState) -> MutexGuard<'_, Shared> {
    // A panicking test thread must not hide the server's state from the others.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A CA and a server certificate for `127.0.0.1`/`localhost`, made with rcgen at test time.
pub struct TestCa {
    /// The CA certificate (PEM): what the client must trust.
    pub ca_pem: String,
    /// The server's certificate chain (DER), leaf first.
    cert_der: Vec<u8>,
    /// The server's private key (PKCS#8 DER).
    key_der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA ("kbin test CA") and a leaf it signed for 127.0.0.1 and localhost.
    pub fn new() -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kbin test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().expect("generate the server key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("an IP")));
        leaf.distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("sign the leaf");
        TestCa {
            ca_pem: ca_cert.pem(),
            cert_der: leaf_cert.der().to_vec(),
            key_der: leaf_key.serialize_der(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The test server. See the module docs.
pub struct Server {
    addr: SocketAddr,
    scheme: &'static str,
    state: SharedState,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Start a plain-HTTP server on 127.0.0.1 (a free port).
    pub fn start() -> Server {
        Self::spawn(None)
    }

    /// Start an HTTPS server on 127.0.0.1 whose certificate `ca` signed.
    pub fn start_tls(ca: &TestCa) -> Server {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(ca.cert_der.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(ca.key_der.clone().into()),
            )
            .expect("server certificate and key");
        Self::spawn(Some(Arc::new(config)))
    }

    fn spawn(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Server {
        let state: SharedState = Arc::default();
        let st = state.clone();
        let is_tls = tls.is_some();
        let (addr, stop, thread) = serve_in_thread(2, move |listener| async move {
            let app = axum::Router::new().fallback(handle).with_state(st);
            match tls {
                None => axum::serve(listener, app).await.expect("serve"),
                Some(cfg) => {
                    let l = TlsListener {
                        inner: listener,
                        acceptor: tokio_rustls::TlsAcceptor::from(cfg),
                    };
                    axum::serve(l, app).await.expect("serve TLS")
                }
            }
        });
        Server {
            addr,
            scheme: if is_tls { "https" } else { "http" },
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The socket address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://`), no trailing slash: a mirror base for kbin.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Serve `body` at `path` (replacing what was there; counters and faults are kept).
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        lock(&self.state)
            .entries
            .entry(path.to_owned())
            .or_default()
            .body = Some(body.into());
    }

    /// Stop serving `path` (404 from now on).
    pub fn remove(&self, path: &str) {
        if let Some(e) = lock(&self.state).entries.get_mut(path) {
            e.body = None;
        }
    }

    /// Queue `fault` for the next request to `path` not already claimed by a queued fault.
    pub fn fault(&self, path: &str, fault: Fault) {
        lock(&self.state)
            .entries
            .entry(path.to_owned())
            .or_default()
            .queued
            .push_back(fault);
    }

    /// Apply `fault` to every request to `path` once its queue is empty (`None` clears it).
    pub fn fault_always(&self, path: &str, fault: impl Into<Option<Fault>>) {
        lock(&self.state)
            .entries
            .entry(path.to_owned())
            .or_default()
            .always = fault.into();
    }

    /// Answer 200 with the whole body even to Range requests (a server without Range support).
    pub fn ignore_range(&self, path: &str) {
        lock(&self.state)
            .entries
            .entry(path.to_owned())
            .or_default()
            .ignore_range = true;
    }

    /// Requests received for `path` (any method, any outcome).
    pub fn requests(&self, path: &str) -> usize {
        lock(&self.state)
            .entries
            .get(path)
            .map_or(0, |e| e.requests)
    }

    /// The Range header of each request to `path`, in order (`None`: no Range header).
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        lock(&self.state)
            .entries
            .get(path)
            .map_or_else(Vec::new, |e| e.ranges.clone())
    }

    /// Body bytes handed to connections for `path`.
    pub fn bytes_served(&self, path: &str) -> u64 {
        lock(&self.state)
            .entries
            .get(path)
            .map_or(0, |e| e.served.load(Ordering::SeqCst))
    }

    /// Requests received for any path.
    pub fn total_requests(&self) -> usize {
        lock(&self.state).total_requests
    }

    /// Body bytes served for any path.
    pub fn total_bytes(&self) -> u64 {
        lock(&self.state).total_bytes.load(Ordering::SeqCst)
    }

    /// Forget every counter (requests, ranges, bytes), keeping bodies and faults.
    pub fn reset_counters(&self) {
        let mut s = lock(&self.state);
        s.total_requests = 0;
        s.total_bytes.store(0, Ordering::SeqCst);
        for e in s.entries.values_mut() {
            e.requests = 0;
            e.ranges.clear();
            e.served.store(0, Ordering::SeqCst);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one request gets, decided under the lock.
struct Plan {
    body: Option<Bytes>,
    fault: Option<Fault>,
    ignore_range: bool,
    served: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

async fn handle(
    State(state): State<SharedState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let plan = {
        let mut s = lock(&state);
        s.total_requests += 1;
        let total = s.total_bytes.clone();
        let e = s.entries.entry(path.clone()).or_default();
        e.requests += 1;
        e.ranges.push(range.clone());
        Plan {
            body: e.body.clone(),
            fault: e.queued.pop_front().or_else(|| e.always.clone()),
            ignore_range: e.ignore_range,
            served: e.served.clone(),
            total,
        }
    };
    match &plan.fault {
        Some(Fault::Status(code)) => {
            return text(
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "injected fault",
            );
        }
        Some(Fault::Redirect(to)) => {
            let mut r = text(StatusCode::FOUND, "moved");
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(to).expect("a valid Location"),
            );
            return r;
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return text(StatusCode::REQUEST_TIMEOUT, "hung");
        }
        _ => {}
    }
    let Some(full) = plan.body.clone() else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let len = full.len() as u64;
    let (status, slice, content_range) = match range
        .as_deref()
        .filter(|_| !plan.ignore_range)
        .and_then(parse_range)
    {
        None => (StatusCode::OK, full, None),
        Some((start, _)) if start >= len => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "");
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("header"),
            );
            return r;
        }
        Some((start, end)) => {
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            (
                StatusCode::PARTIAL_CONTENT,
                full.slice(start as usize..=end as usize),
                Some(format!("bytes {start}-{end}/{len}")),
            )
        }
    };
    let announced = match &plan.fault {
        Some(Fault::ContentLength(n)) => *n,
        _ => slice.len() as u64,
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, announced)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(cr) = content_range {
        builder = builder.header(header::CONTENT_RANGE, cr);
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(body_stream(slice, plan))
    };
    builder.body(body).expect("a valid response")
}

fn text(status: StatusCode, msg: &'static str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(msg))
        .expect("a valid response")
}

/// `bytes=N-` or `bytes=N-M` (single ranges only, as download clients send).
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    Some((start, end))
}

/// The body as chunks, with the plan's fault applied; counts what it hands over.
fn body_stream(
    data: Bytes,
    plan: Plan,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct St {
        data: Bytes,
        pos: usize,
        plan: Plan,
        done: bool,
    }
    let limit = match plan.fault {
        Some(Fault::CutAfter(n)) | Some(Fault::StallAfter(n)) => Some(n as usize),
        _ => None,
    };
    let st = St {
        data,
        pos: 0,
        plan,
        done: false,
    };
    futures_util::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        let end_at = limit.map_or(st.data.len(), |l| l.min(st.data.len()));
        if st.pos >= end_at {
            st.done = true;
            match st.plan.fault {
                Some(Fault::CutAfter(_)) => {
                    // Let the connection flush what was sent, then kill it.
                    tokio::time::sleep(FLUSH_GRACE).await;
                    return Some((
                        Err(std::io::Error::other("injected fault: connection cut")),
                        st,
                    ));
                }
                Some(Fault::StallAfter(_)) => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return None;
                }
                Some(Fault::ContentLength(_)) => {
                    // Flush the real bytes before hyper notices the lie and closes.
                    tokio::time::sleep(FLUSH_GRACE).await;
                    return None;
                }
                _ => return None,
            }
        }
        let chunk = match st.plan.fault {
            Some(Fault::Slow(rate)) => {
                // Ten slices a second at the given rate.
                let n = (rate / 10).max(1) as usize;
                tokio::time::sleep(Duration::from_millis(100)).await;
                n
            }
            _ => CHUNK,
        };
        let n = chunk.min(end_at - st.pos);
        let out = st.data.slice(st.pos..st.pos + n);
        st.pos += n;
        st.plan.served.fetch_add(n as u64, Ordering::SeqCst);
        st.plan.total.fetch_add(n as u64, Ordering::SeqCst);
        Some((Ok(out), st))
    })
}

/// A TCP listener that completes a TLS handshake before handing a connection to axum. Failed
/// handshakes (a client that does not trust the CA) are dropped and the next one awaited.
struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.inner.accept().await else {
                continue;
            };
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Run `serve` (given a listener on a free port of 127.0.0.1) on a runtime of `workers` threads
/// in a thread of its own, until the returned sender is dropped or sent to; then every
/// connection is cut. Returns the listener's address, that sender and the thread.
pub fn serve_in_thread<F, Fut>(
    workers: usize,
    serve: F,
) -> (
    SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("test server runtime");
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            addr_tx
                .send(listener.local_addr().expect("local address"))
                .expect("report the address");
            serve(listener).await;
        });
        // Block until the owner is dropped, then cut every connection.
        let _ = stop_rx.recv();
        rt.shutdown_background();
    });
    let addr = addr_rx.recv().expect("test server started");
    (addr, stop_tx, thread)
}
