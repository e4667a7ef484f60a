//! A stand-in Rekor on 127.0.0.1: the two endpoints `kbin update` asks about a detached
//! signature (`POST /api/v1/index/retrieve` with `{"hash": "sha256:<hex>"}` → a JSON list of
//! UUIDs; `GET /api/v1/log/entries/{uuid}` → `{uuid: entry}`), serving entries the test signed
//! with its test Rekor key ([`super::sigstore::TestSigstore`]). Dropping it stops it.

#![allow(dead_code)] // each user takes what it needs

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use sha2::Digest as _;

#[derive(Default)]
struct Log {
    /// sha256 hex → entry UUIDs.
    by_hash: BTreeMap<String, Vec<String>>,
    /// UUID → entry (Rekor's shape, without the UUID key).
    entries: BTreeMap<String, serde_json::Value>,
    requests: usize,
}

type Shared = Arc<Mutex<Log>>;

/// The stand-in log.
pub struct Rekor {
    addr: SocketAddr,
    log: Shared,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Rekor {
    /// Start it on a free port of 127.0.0.1.
    pub fn start() -> Rekor {
        let log: Shared = Arc::default();
        let st = log.clone();
        let (addr, stop, _thread) = super::server::serve_in_thread(1, move |listener| async move {
            let app = axum::Router::new()
                .route("/api/v1/index/retrieve", axum::routing::post(retrieve))
                .route("/api/v1/log/entries/{uuid}", axum::routing::get(entry))
                .with_state(st);
            axum::serve(listener, app).await.expect("serve");
        });
        Rekor {
            addr,
            log,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT`: what `KBIN_REKOR_URL` gets.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Log `entry` (Rekor's shape, from [`super::sigstore::Signed::rekor_entry`]) under the
    /// blob digest `sha256_hex`.
    pub fn add(&self, sha256_hex: &str, entry: serde_json::Value) {
        let uuid = hex::encode(sha2::Sha256::digest(entry.to_string().as_bytes()));
        let mut l = self.log.lock().unwrap();
        l.by_hash
            .entry(sha256_hex.to_owned())
            .or_default()
            .push(uuid.clone());
        l.entries.insert(uuid, entry);
    }

    /// Forget every entry.
    pub fn clear(&self) {
        let mut l = self.log.lock().unwrap();
        l.by_hash.clear();
        l.entries.clear();
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.log.lock().unwrap().requests
    }
}

impl Drop for Rekor {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn retrieve(State(log): State<Shared>, body: Bytes) -> (StatusCode, String) {
    let mut l = log.lock().unwrap();
    l.requests += 1;
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let Some(hex) = v["hash"].as_str().and_then(|h| h.strip_prefix("sha256:")) else {
        return (StatusCode::BAD_REQUEST, "no sha256 hash".into());
    };
    let uuids = l.by_hash.get(hex).cloned().unwrap_or_default();
    (StatusCode::OK, serde_json::json!(uuids).to_string())
}

async fn entry(State(log): State<Shared>, Path(uuid): Path<String>) -> (StatusCode, String) {
    let mut l = log.lock().unwrap();
    l.requests += 1;
    match l.entries.get(&uuid) {
        Some(e) => (StatusCode::OK, serde_json::json!({ uuid: e }).to_string()),
        None => (StatusCode::NOT_FOUND, "no such entry".into()),
    }
}
