//! `FetchOptions::from_env`: the environment variables kbin reads for downloads. A test binary
//! of its own, with a single test, because it sets process-wide environment variables.

mod common;

use std::time::Duration;

use common::server::{Server, TestCa};
use kbin::fetch::{FetchOptions, Fetcher, NoProgress};

#[test]
fn environment_configures_ca_bundle_proxies_and_knobs() {
    let ca = TestCa::new();
    let tls = Server::start_tls(&ca);
    tls.put("/a", b"over tls".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &ca.ca_pem).unwrap();
    let vars = [
        "KBIN_CA_BUNDLE",
        "SSL_CERT_FILE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
    ];
    // SAFETY: this binary's only test; no other thread reads the environment yet.
    unsafe {
        for v in vars {
            std::env::remove_var(v);
        }
        std::env::set_var("SSL_CERT_FILE", &bundle);
        std::env::set_var("KBIN_HTTP_STALL_TIMEOUT_MS", "250");
        std::env::set_var("KBIN_HTTP_CONNECT_TIMEOUT_MS", "1500");
        std::env::set_var("KBIN_HTTP_RETRIES", "2");
        std::env::set_var("KBIN_HTTP_BACKOFF_MS", "nonsense");
        std::env::set_var("https_proxy", "http://127.0.0.1:9");
        std::env::set_var("NO_PROXY", "internal.example");
    }
    let o = FetchOptions::from_env(Some("file:///srv/m".into()), Default::default());
    assert_eq!(o.mirror.as_deref(), Some("file:///srv/m"));
    assert_eq!(o.ca_bundle.as_deref(), Some(bundle.as_path()));
    assert_eq!(o.stall_timeout, Duration::from_millis(250));
    assert_eq!(o.connect_timeout, Duration::from_millis(1500));
    assert_eq!(o.retries, 2);
    assert_eq!(
        o.backoff,
        FetchOptions::default().backoff,
        "a knob that is not a number is ignored"
    );
    assert_eq!(o.proxy.https.as_deref(), Some("http://127.0.0.1:9"));
    assert_eq!(o.proxy.no_proxy.as_deref(), Some("internal.example"));
    assert_eq!(o.proxy.http, None);

    // SSL_CERT_FILE makes the test CA trusted; the https proxy (a dead port) is skipped for
    // 127.0.0.1.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = Fetcher::new(FetchOptions::from_env(None, Default::default())).unwrap();
    let done = rt
        .block_on(f.download(&tls.url("/a"), &dir.path().join("a"), None, &NoProgress))
        .unwrap();
    assert_eq!(std::fs::read(&done.path).unwrap(), b"over tls");

    // KBIN_CA_BUNDLE wins over SSL_CERT_FILE.
    let other = dir.path().join("other.pem");
    std::fs::write(&other, TestCa::new().ca_pem).unwrap();
    // SAFETY: as above; the runtime's threads do not read the environment.
    unsafe { std::env::set_var("KBIN_CA_BUNDLE", &other) };
    let o = FetchOptions::from_env(None, Default::default());
    assert_eq!(o.ca_bundle.as_deref(), Some(other.as_path()));
    // An empty --mirror / KBIN_MIRROR means none.
    assert_eq!(
        FetchOptions::from_env(Some(" ".into()), Default::default()).mirror,
        None
    );
}
