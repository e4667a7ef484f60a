//! Rekor lookups: the transparency-log entries of a detached signature.
//!
//! dl.k8s.io publishes, beside each Kubernetes binary, a cosign keyless signature as two files
//! (`.sig`, `.cert`) but not its Rekor entry, which offline verification needs (its signed
//! entry timestamp proves the signature was logged while the ten-minute certificate was valid).
//! `kbin update` (online) asks Rekor for the entries of the artifact's sha256
//! (`POST {rekor}/api/v1/index/retrieve`, then `GET {rekor}/api/v1/log/entries/{uuid}` for
//! each), and [`crate::trust`] verifies them offline as it verifies any bundle. Only `kbin
//! update` talks to Rekor: what it verified is kept as a bundle, so installs stay offline.
//!
//! Rekor is an API, not a file tree: `--mirror` does not rewrite it; `--rekor-url` (or
//! `KBIN_REKOR_URL`) does.

use std::time::Duration;

use base64::Engine as _;

use crate::trust::sigstore::LogEntry;

/// Sigstore's public-good Rekor.
pub const DEFAULT_URL: &str = "https://rekor.sigstore.dev";

/// The environment variable that overrides it.
pub const URL_ENV: &str = "KBIN_REKOR_URL";

/// The most entries looked at for one digest: several signatures of the same bytes may be
/// logged, but not hundreds; a log that answers more is not asked about each.
const MAX_ENTRIES: usize = 16;

/// The most bytes one answer may have (an entry is a few KB).
const MAX_ANSWER: usize = 1 << 20;

/// One request's time limit: the log answers in well under a second.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a lookup failed (not a refusal: the log could not be asked or did not answer sensibly).
#[derive(Debug, thiserror::Error)]
pub enum RekorError {
    /// The log could not be reached (connection, TLS, timeout, a 5xx).
    #[error("cannot reach the transparency log {url}: {detail}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The log answered, but not in Rekor's shape.
    #[error("{url} did not answer as a Rekor log does: {detail}")]
    Garbled {
        /// The URL asked.
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// A Rekor base URL (`--rekor-url`, `KBIN_REKOR_URL`), checked: http(s), no query, no
/// trailing slash kept.
pub fn base_url(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "{url:?} has a query or fragment: give the log's base URL"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Every entry `base` holds for the blob whose sha256 is `sha256_hex` (at most
/// [`MAX_ENTRIES`]), as offline verification reads them. None is an empty list, not an error.
pub async fn entries(
    client: &reqwest::Client,
    base: &str,
    sha256_hex: &str,
) -> Result<Vec<LogEntry>, RekorError> {
    let url = format!("{base}/api/v1/index/retrieve");
    let body = serde_json::json!({ "hash": format!("sha256:{sha256_hex}") }).to_string();
    let answer = send(
        client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body),
        &url,
    )
    .await?;
    let uuids: Vec<String> = serde_json::from_slice(&answer).map_err(|e| RekorError::Garbled {
        url: url.clone(),
        detail: format!("not a JSON list of entry UUIDs ({e})"),
    })?;
    let mut out = Vec::new();
    for uuid in uuids.iter().take(MAX_ENTRIES) {
        // A UUID goes into a path: anything but hex is not one.
        if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RekorError::Garbled {
                url,
                detail: format!("{uuid:?} is not an entry UUID"),
            });
        }
        let entry_url = format!("{base}/api/v1/log/entries/{uuid}");
        let answer = send(client.get(&entry_url), &entry_url).await?;
        out.push(entry(&answer).map_err(|detail| RekorError::Garbled {
            url: entry_url,
            detail,
        })?);
    }
    Ok(out)
}

/// Send `req` and read a successful answer's body (at most [`MAX_ANSWER`]).
async fn send(req: reqwest::RequestBuilder, url: &str) -> Result<Vec<u8>, RekorError> {
    let unreachable = |detail: String| RekorError::Unreachable {
        url: url.to_owned(),
        detail,
    };
    let resp = req
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(crate::util::chain(&e)))?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(unreachable(format!("it answered {status}")));
    }
    if !status.is_success() {
        return Err(RekorError::Garbled {
            url: url.to_owned(),
            detail: format!("it answered {status}"),
        });
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| unreachable(crate::util::chain(&e)))?;
    if body.len() > MAX_ANSWER {
        return Err(RekorError::Garbled {
            url: url.to_owned(),
            detail: format!("its answer is {} bytes, more than an entry has", body.len()),
        });
    }
    Ok(body.to_vec())
}

/// One `GET /api/v1/log/entries/{uuid}` answer: `{uuid: {body, integratedTime, logID,
/// logIndex, verification: {signedEntryTimestamp}}}`.
fn entry(answer: &[u8]) -> Result<LogEntry, String> {
    let v: serde_json::Value =
        serde_json::from_slice(answer).map_err(|e| format!("the entry is not JSON ({e})"))?;
    let e = v
        .as_object()
        .and_then(|o| o.values().next())
        .ok_or("the answer is not an object holding one entry")?;
    let field = |k: &str| e.get(k).ok_or(format!("the entry has no {k}"));
    let str_of = |k: &str| -> Result<String, String> {
        field(k)?
            .as_str()
            .map(str::to_owned)
            .ok_or(format!("the entry's {k} is not a string"))
    };
    let int_of = |k: &str| -> Result<i64, String> {
        field(k)?
            .as_i64()
            .ok_or(format!("the entry's {k} is not an integer"))
    };
    let set = e["verification"]["signedEntryTimestamp"]
        .as_str()
        .ok_or("the entry has no verification.signedEntryTimestamp (SET)")?;
    Ok(LogEntry {
        body: str_of("body")?,
        integrated_time: int_of("integratedTime")?,
        log_index: int_of("logIndex")?,
        log_id: hex::decode(str_of("logID")?).map_err(|_| "the entry's logID is not hex")?,
        set: base64::engine::general_purpose::STANDARD
            .decode(set.trim())
            .map_err(|_| "the entry's signedEntryTimestamp is not base64")?,
        proof: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_read_as_rekor_answers_it_and_garbage_is_named() {
        let e = entry(
            br#"{"24296fb2": {"body": "Ym9keQ==", "integratedTime": 1700000000, "logID": "c0d2", "logIndex": 7, "verification": {"signedEntryTimestamp": "c2V0"}}}"#,
        )
        .unwrap();
        assert_eq!(e.log_id, [0xc0, 0xd2]);
        assert_eq!(e.set, b"set");
        assert_eq!((e.integrated_time, e.log_index), (1700000000, 7));
        for bad in ["[]", "{}", r#"{"u": {"body": "x"}}"#, "<html>"] {
            assert!(entry(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rekor_url_is_an_http_base() {
        assert_eq!(
            base_url("https://rekor.sigstore.dev/").unwrap(),
            "https://rekor.sigstore.dev"
        );
        for bad in ["rekor.sigstore.dev", "file:///x", "https://r/?a=b"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }
}
