//! Download one URL with kbin's fetch layer, for measuring it against curl:
//!
//! ```text
//! cargo build --release --example fetch
//! target/release/examples/fetch URL OUT [sha256:HEX]
//! ```
//!
//! Prints the size, sha256 and throughput on stderr. Proxies, KBIN_CA_BUNDLE and the
//! KBIN_HTTP_* knobs are read from the environment as kbin does.

use std::time::Instant;

use kbin::fetch::{FetchOptions, Fetcher, NoProgress};
use kbin::manifest::Digest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: fetch URL OUT [sha256:HEX]");
    };
    let expected: Option<Digest> = args.next().map(|d| d.parse()).transpose()?;
    let fetcher = Fetcher::new(FetchOptions::from_env(None, Default::default()))?;
    // Start from scratch: the example measures transfers, not resumes.
    let _ = std::fs::remove_file(&out);
    let t = Instant::now();
    let done = fetcher
        .download(&url, out.as_ref(), expected.as_ref(), &NoProgress)
        .await?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} bytes in {secs:.3} s ({:.0} MB/s), {}",
        done.size,
        done.size as f64 / secs / 1e6,
        done.sha256
    );
    Ok(())
}
