//! The download layer against a real HTTP(S) server on 127.0.0.1 with injected faults.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::server::{Fault, Server, TestCa};
use kbin::fetch::{
    Downloaded, FetchError, FetchOptions, Fetcher, NoProgress, Progress, ProxySettings,
};
use kbin::manifest::Digest;
use sha2::Digest as _;

const PATH: &str = "/release/v1.30.0/bin/linux/amd64/kubectl";

/// Deterministic, non-repeating bytes (so a resume from the wrong offset changes the digest).
fn artifact(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(b: &[u8]) -> Digest {
    Digest::sha256_of(&sha2::Sha256::digest(b))
}

fn sha512(b: &[u8]) -> Digest {
    Digest::sha512_of(&sha2::Sha512::digest(b))
}

/// Fast retries and a short stall timeout so fault tests take milliseconds.
fn opts() -> FetchOptions {
    FetchOptions {
        stall_timeout: Duration::from_secs(3),
        backoff: Duration::from_millis(10),
        retries: 4,
        ..FetchOptions::default()
    }
}

fn fetcher() -> Fetcher {
    Fetcher::new(opts()).unwrap()
}

struct Setup {
    server: Server,
    body: Vec<u8>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(len: usize) -> Setup {
        let server = Server::start();
        let body = artifact(len);
        server.put(PATH, body.clone());
        Setup {
            server,
            body,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn partial(&self) -> PathBuf {
        self.dir.path().join("kubectl.partial")
    }
    fn url(&self) -> String {
        self.server.url(PATH)
    }
}

fn assert_complete(done: &Downloaded, body: &[u8]) {
    assert_eq!(std::fs::read(&done.path).unwrap(), body);
    assert_eq!(done.size, body.len() as u64);
    assert_eq!(done.sha256, sha256(body));
}

fn assert_absent(p: &Path) {
    assert!(!p.exists(), "{} should not exist", p.display());
}

#[derive(Default)]
struct Recorder {
    begun: AtomicU64,
    bytes: AtomicU64,
    finished: AtomicU64,
}

impl Progress for Recorder {
    fn begin(&self, _total: Option<u64>, already: u64) {
        self.begun.fetch_add(1, Ordering::SeqCst);
        self.bytes.store(already, Ordering::SeqCst);
    }
    fn inc(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::SeqCst);
    }
    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn download_streams_hashes_and_reports_progress() {
    let s = Setup::new(3 << 20);
    let rec = Recorder::default();
    let expected = sha256(&s.body);
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&expected), &rec)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(done.sha512, None);
    assert_eq!(done.resumed_from, 0);
    assert_eq!(s.server.requests(PATH), 1);
    assert_eq!(s.server.ranges(PATH), vec![None]);
    assert_eq!(rec.bytes.load(Ordering::SeqCst), s.body.len() as u64);
    assert_eq!(rec.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn sha512_pin_is_computed_and_checked() {
    let s = Setup::new(100_000);
    let expected = sha512(&s.body);
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&expected), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(done.sha512, Some(expected));
}

#[tokio::test]
async fn sha512_survives_resumes_and_restarts() {
    // A partial from an earlier run, a cut, then a server that stops honouring Range: the
    // sha512 (hashed on its own thread) must follow every turn.
    let s = Setup::new(3 << 20);
    std::fs::write(s.partial(), &s.body[..1_000_000]).unwrap();
    s.server.fault(PATH, Fault::CutAfter(500_000));
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha512(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(done.sha512, Some(sha512(&s.body)));
    assert_eq!(done.resumed_from, 1_500_000);

    std::fs::write(s.partial(), &s.body[..1_000_000]).unwrap();
    s.server.ignore_range(PATH);
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha512(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(done.sha512, Some(sha512(&s.body)));
    assert_eq!(done.resumed_from, 0);
}

#[tokio::test]
async fn digest_mismatch_keeps_nothing() {
    let s = Setup::new(100_000);
    let wrong = sha256(b"something else");
    let err = fetcher()
        .download(&s.url(), &s.partial(), Some(&wrong), &NoProgress)
        .await
        .unwrap_err();
    match &err {
        FetchError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256(&s.body));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(&s.url()), "{err}");
    assert_absent(&s.partial());
    // A mismatching sha512 pin is refused the same way.
    let err = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha512(b"x")), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::DigestMismatch { .. }), "{err:?}");
    assert_absent(&s.partial());
}

#[tokio::test]
async fn not_found_names_the_url_and_is_not_retried() {
    let s = Setup::new(10);
    let url = s.server.url("/release/v9.9.9/missing");
    let err = fetcher()
        .download(&url, &s.partial(), None, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::Status { status, .. } if status.as_u16() == 404),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("404"), "{msg}");
    assert!(err.hint().is_some());
    assert_eq!(s.server.requests("/release/v9.9.9/missing"), 1);
    assert_absent(&s.partial());
    // Other 4xx are not retried either.
    s.server.fault_always(PATH, Fault::Status(403));
    let err = fetcher()
        .download(&s.url(), &s.partial(), None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert_eq!(s.server.requests(PATH), 1);
}

#[tokio::test]
async fn server_errors_twice_then_success_takes_three_requests() {
    let s = Setup::new(200_000);
    s.server.fault(PATH, Fault::Status(500));
    s.server.fault(PATH, Fault::Status(503));
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(s.server.requests(PATH), 3);
}

#[tokio::test]
async fn server_errors_exhaust_the_retries() {
    let s = Setup::new(1000);
    s.server.fault_always(PATH, Fault::Status(502));
    let f = Fetcher::new(FetchOptions {
        retries: 2,
        ..opts()
    })
    .unwrap();
    let err = f
        .download(&s.url(), &s.partial(), None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("502"), "{err}");
    assert_eq!(s.server.requests(PATH), 3);
}

#[tokio::test]
async fn cut_connection_resumes_from_the_cut() {
    let s = Setup::new(2 << 20);
    let cut = 700_001;
    s.server.fault(PATH, Fault::CutAfter(cut));
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(
        s.server.ranges(PATH),
        vec![None, Some(format!("bytes={cut}-"))]
    );
    assert_eq!(done.resumed_from, cut);
    // Nothing was fetched twice.
    assert_eq!(s.server.bytes_served(PATH), s.body.len() as u64);
}

#[tokio::test]
async fn cut_twice_resumes_twice() {
    let s = Setup::new(1 << 20);
    s.server.fault(PATH, Fault::CutAfter(100_000));
    s.server.fault(PATH, Fault::CutAfter(50_000));
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(
        s.server.ranges(PATH),
        vec![
            None,
            Some("bytes=100000-".into()),
            Some("bytes=150000-".into())
        ]
    );
}

#[tokio::test]
async fn partial_left_by_an_earlier_run_is_resumed() {
    let s = Setup::new(500_000);
    std::fs::write(s.partial(), &s.body[..123_456]).unwrap();
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(s.server.ranges(PATH), vec![Some("bytes=123456-".into())]);
    assert_eq!(done.resumed_from, 123_456);
    assert_eq!(s.server.bytes_served(PATH), 500_000 - 123_456);
}

#[tokio::test]
async fn complete_partial_is_verified_without_refetching() {
    let s = Setup::new(50_000);
    std::fs::write(s.partial(), &s.body).unwrap();
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(s.server.ranges(PATH), vec![Some("bytes=50000-".into())]);
    assert_eq!(s.server.bytes_served(PATH), 0);
}

#[tokio::test]
async fn stale_partial_with_wrong_bytes_is_replaced_after_one_resume() {
    // An old partial whose bytes differ: the resume completes with a wrong digest, so kbin
    // starts over once, from scratch, and succeeds.
    let s = Setup::new(300_000);
    std::fs::write(s.partial(), vec![0u8; 100_000]).unwrap();
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(done.resumed_from, 0);
    assert_eq!(
        s.server.ranges(PATH),
        vec![Some("bytes=100000-".into()), None]
    );
}

#[tokio::test]
async fn partial_longer_than_the_file_starts_over() {
    let s = Setup::new(10_000);
    std::fs::write(s.partial(), vec![1u8; 20_000]).unwrap();
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(
        s.server.ranges(PATH),
        vec![Some("bytes=20000-".into()), None]
    );
}

#[tokio::test]
async fn server_ignoring_range_gets_a_clean_restart() {
    let s = Setup::new(400_000);
    s.server.ignore_range(PATH);
    s.server.fault(PATH, Fault::CutAfter(150_000));
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(
        s.server.ranges(PATH),
        vec![None, Some("bytes=150000-".into())]
    );
    assert_eq!(done.resumed_from, 0);
}

#[tokio::test]
async fn corrupt_partial_with_ignored_range_is_replaced() {
    // A stale partial with wrong bytes and a server that answers 200: the old bytes go.
    let s = Setup::new(10_000);
    s.server.ignore_range(PATH);
    std::fs::write(s.partial(), b"garbage from an older artifact").unwrap();
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
}

#[tokio::test]
async fn stalled_server_is_a_timeout_error() {
    let s = Setup::new(300_000);
    s.server.fault_always(PATH, Fault::StallAfter(1000));
    let f = Fetcher::new(FetchOptions {
        stall_timeout: Duration::from_millis(300),
        retries: 1,
        ..opts()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = f
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The second attempt resumed after the bytes the first one got.
    assert_eq!(
        s.server.ranges(PATH),
        vec![None, Some("bytes=1000-".into())]
    );
    // What arrived is kept for a later resume, and is the right prefix.
    assert_eq!(std::fs::read(s.partial()).unwrap(), &s.body[..2000]);
}

#[tokio::test]
async fn server_that_never_answers_is_a_timeout_error() {
    let s = Setup::new(1000);
    s.server.fault_always(PATH, Fault::Hang);
    let f = Fetcher::new(FetchOptions {
        stall_timeout: Duration::from_millis(200),
        retries: 0,
        ..opts()
    })
    .unwrap();
    let err = f
        .download(&s.url(), &s.partial(), None, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_content_length_is_an_error_and_nothing_is_kept() {
    let s = Setup::new(100_000);
    s.server
        .fault_always(PATH, Fault::ContentLength(s.body.len() as u64 + 5000));
    let err = fetcher()
        .download(&s.url(), &s.partial(), None, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Length { .. } | FetchError::Truncated { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&s.url()), "{err}");
    assert_absent(&s.partial());
}

#[tokio::test]
async fn redirect_to_another_server_is_followed() {
    let s = Setup::new(250_000);
    let other = Server::start();
    let real = "/download/real-location/kubectl";
    other.put(real, s.body.clone());
    s.server
        .fault_always(PATH, Fault::Redirect(other.url(real)));
    // A cut on the far side resumes there, through the redirect.
    other.fault(real, Fault::CutAfter(100_000));
    let done = fetcher()
        .download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(s.server.requests(PATH), 2);
    assert_eq!(other.ranges(real), vec![None, Some("bytes=100000-".into())]);
}

#[tokio::test]
async fn mirror_replaces_scheme_and_host() {
    let s = Setup::new(10_000);
    let upstream = format!("https://dl.k8s.io{PATH}");
    let f = Fetcher::new(FetchOptions {
        mirror: Some(s.server.base()),
        ..opts()
    })
    .unwrap();
    assert_eq!(f.resolve_url(&upstream).unwrap().as_str(), s.url());
    let done = f
        .download(&upstream, &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(s.server.requests(PATH), 1);

    // A mirror with a path prefix, from the per-host table.
    let prefixed = format!("/mirrors/k8s{PATH}");
    s.server.put(&prefixed, s.body.clone());
    let f = Fetcher::new(FetchOptions {
        host_mirrors: [(
            "dl.k8s.io".to_owned(),
            format!("{}/mirrors/k8s/", s.server.base()),
        )]
        .into(),
        ..opts()
    })
    .unwrap();
    std::fs::remove_file(s.partial()).unwrap();
    f.download(&upstream, &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_eq!(s.server.requests(&prefixed), 1);

    // Errors name both the mirror URL and the upstream one.
    let err = f
        .download(
            "https://dl.k8s.io/nope",
            &s.dir.path().join("nope"),
            None,
            &NoProgress,
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/mirrors/k8s/nope") && msg.contains("https://dl.k8s.io/nope"),
        "{msg}"
    );
}

#[tokio::test]
async fn file_urls_work_directly_and_as_a_mirror() {
    let s = Setup::new(300_000);
    let root = tempfile::tempdir().unwrap();
    let on_disk = root.path().join(PATH.trim_start_matches('/'));
    std::fs::create_dir_all(on_disk.parent().unwrap()).unwrap();
    std::fs::write(&on_disk, &s.body).unwrap();

    let direct = url::Url::from_file_path(&on_disk).unwrap().to_string();
    let done = fetcher()
        .download(&direct, &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);

    let mirror = url::Url::from_directory_path(root.path())
        .unwrap()
        .to_string();
    let f = Fetcher::new(FetchOptions {
        mirror: Some(mirror),
        ..opts()
    })
    .unwrap();
    let upstream = format!("https://dl.k8s.io{PATH}");
    let other = s.dir.path().join("second.partial");
    let done = f
        .download(&upstream, &other, Some(&sha512(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(s.server.requests(PATH), 0, "the mirror served it");

    // A missing file names the URL; a wrong digest keeps nothing.
    let err = f
        .download("https://dl.k8s.io/nothing/here", &other, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::FileNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing/here"), "{err}");
    std::fs::remove_file(&other).unwrap();
    let err = f
        .download(&upstream, &other, Some(&sha256(b"x")), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::DigestMismatch { .. }), "{err:?}");
    assert_absent(&other);
}

#[tokio::test]
async fn checksum_files_are_fetched_and_parsed() {
    let s = Setup::new(1000);
    let d = sha256(&s.body);
    s.server
        .put(&format!("{PATH}.sha256"), format!("{}\n", d.hex()));
    s.server.put(
        "/v3.5.16/SHA256SUMS",
        format!(
            "{}  etcd-v3.5.16-darwin-arm64.zip\n{}  etcd-v3.5.16-linux-amd64.tar.gz\n",
            sha256(b"a").hex(),
            d.hex()
        ),
    );
    s.server
        .put("/k.tar.gz.sha512", sha512(&s.body).hex().to_owned());
    let f = fetcher();
    assert_eq!(
        f.checksum(&s.server.url(&format!("{PATH}.sha256")), "kubectl")
            .await
            .unwrap(),
        d
    );
    assert_eq!(
        f.checksum(
            &s.server.url("/v3.5.16/SHA256SUMS"),
            "etcd-v3.5.16-linux-amd64.tar.gz"
        )
        .await
        .unwrap(),
        d
    );
    assert_eq!(
        f.checksum(&s.server.url("/k.tar.gz.sha512"), "k.tar.gz")
            .await
            .unwrap(),
        sha512(&s.body)
    );
    let err = f
        .checksum(
            &s.server.url("/v3.5.16/SHA256SUMS"),
            "etcd-v3.5.16-linux-s390x.tar.gz",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::ChecksumNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("linux-s390x"), "{err}");
    // Retried on 5xx like downloads; 404 names the URL.
    s.server
        .fault(&format!("{PATH}.sha256"), Fault::Status(500));
    assert_eq!(
        f.checksum(&s.server.url(&format!("{PATH}.sha256")), "kubectl")
            .await
            .unwrap(),
        d
    );
    let err = f
        .checksum(&s.server.url("/none.sha256"), "none")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/none.sha256"), "{err}");
}

#[tokio::test]
async fn ca_bundle_makes_a_private_ca_trusted() {
    let ca = TestCa::new();
    let server = Server::start_tls(&ca);
    let body = artifact(200_000);
    server.put(PATH, body.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = server.url(PATH);
    assert!(url.starts_with("https://127.0.0.1:"));

    // Without the bundle the server is not trusted, and retrying would not help.
    let err = fetcher()
        .download(&url, &dir.path().join("a"), None, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Certificate { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(err.hint().unwrap().contains("KBIN_CA_BUNDLE"));
    assert_eq!(server.total_requests(), 0);
    assert!(!dir.path().join("a").exists());

    // With it (a bundle of several certificates, ours not first) it is.
    let other = TestCa::new();
    let bundle = dir.path().join("corp-ca.pem");
    std::fs::write(&bundle, format!("{}{}", other.ca_pem, ca.ca_pem)).unwrap();
    let f = Fetcher::new(FetchOptions {
        ca_bundle: Some(bundle),
        ..opts()
    })
    .unwrap();
    let done = f
        .download(
            &url,
            &dir.path().join("b"),
            Some(&sha256(&body)),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_complete(&done, &body);

    // A bundle that is not PEM is refused up front.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = Fetcher::new(FetchOptions {
        ca_bundle: Some(junk.clone()),
        ..opts()
    })
    .unwrap_err();
    assert!(matches!(err, FetchError::CaBundle { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

#[tokio::test]
async fn proxy_is_used_for_remote_hosts_and_bypassed_for_loopback() {
    let s = Setup::new(20_000);
    // The test server doubles as a forward proxy: a proxied request arrives in absolute form
    // and is routed by its path. The remote host is never resolved or contacted.
    let proxy = Server::start();
    let remote = "/proxied/kubectl";
    proxy.put(remote, s.body.clone());
    let f = Fetcher::new(FetchOptions {
        proxy: ProxySettings {
            http: Some(proxy.base()),
            ..ProxySettings::default()
        },
        ..opts()
    })
    .unwrap();
    let done = f
        .download(
            "http://upstream.kbin-test.invalid/proxied/kubectl",
            &s.partial(),
            Some(&sha256(&s.body)),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_complete(&done, &s.body);
    assert_eq!(proxy.requests(remote), 1);

    // 127.0.0.1 goes direct even though a proxy is set and NO_PROXY does not name it.
    let f = Fetcher::new(FetchOptions {
        proxy: ProxySettings {
            http: Some(proxy.base()),
            all: Some(proxy.base()),
            no_proxy: Some("example.com".into()),
            ..ProxySettings::default()
        },
        ..opts()
    })
    .unwrap();
    std::fs::remove_file(s.partial()).unwrap();
    f.download(&s.url(), &s.partial(), Some(&sha256(&s.body)), &NoProgress)
        .await
        .unwrap();
    assert_eq!(s.server.requests(PATH), 1);
    assert_eq!(proxy.requests(PATH), 0);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let f = Fetcher::new(FetchOptions {
        retries: 2,
        ..opts()
    })
    .unwrap();
    let err = f
        .download(&url, &dir.path().join("x"), None, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Http { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn bad_urls_are_refused_clearly() {
    let err = fetcher()
        .download(
            "ftp://example.com/x",
            Path::new("/nonexistent/x"),
            None,
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::BadUrl { .. }), "{err:?}");
}

/// `kbin mirror export` and `kbin install` drive one Fetcher from several runtimes: a
/// current-thread one for image pulls that stays alive, idle, while a multi-thread one fetches
/// the artifacts, and back. A connection pooled by the idle runtime cannot make progress from
/// the other: reusing it stalled the request for the whole stall timeout, then retried.
#[test]
fn one_fetcher_serves_several_runtimes_without_a_stall() {
    let s = Setup::new(100_000);
    let f = Fetcher::new(FetchOptions {
        stall_timeout: Duration::from_secs(5),
        retries: 0,
        ..opts()
    })
    .unwrap();
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let busy = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for (round, rt) in [&idle, &busy, &idle, &busy].into_iter().enumerate() {
        let started = std::time::Instant::now();
        let partial = s.dir.path().join(format!("round-{round}"));
        let done = rt
            .block_on(f.download(&s.url(), &partial, None, &NoProgress))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_complete(&done, &s.body);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
}
