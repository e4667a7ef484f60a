//! Download URLs with kbin's fetch layer, for measuring it against curl:
//!
//! ```text
//! cargo build --release --example fetch
//! target/release/examples/fetch URL OUT [sha256:HEX|sha512:HEX]
//! target/release/examples/fetch --jobs 4 URL OUT URL OUT …     # concurrent, like curl --parallel
//! ```
//!
//! Prints sizes, digests and throughput on stderr. Proxies, KBIN_CA_BUNDLE and the KBIN_HTTP_*
//! knobs are read from the environment as kbin does.

use std::sync::Arc;
use std::time::Instant;

use kbin::fetch::{FetchOptions, Fetcher, NoProgress};
use kbin::manifest::Digest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut jobs = 4;
    if args.first().is_some_and(|a| a == "--jobs") && args.len() > 1 {
        jobs = args[1].parse()?;
        args.drain(..2);
    }
    let mut pairs: Vec<(String, String, Option<Digest>)> = Vec::new();
    let mut it = args.into_iter().peekable();
    while let (Some(url), Some(out)) = (it.next(), it.next()) {
        let digest = match it.peek() {
            Some(d) if d.starts_with("sha256:") || d.starts_with("sha512:") => {
                Some(it.next().unwrap_or_default().parse()?)
            }
            _ => None,
        };
        pairs.push((url, out, digest));
    }
    if pairs.is_empty() {
        anyhow::bail!("usage: fetch [--jobs N] URL OUT [DIGEST] [URL OUT [DIGEST]]...");
    }
    let fetcher = Arc::new(Fetcher::new(FetchOptions::from_env(
        None,
        Default::default(),
    ))?);
    let gate = Arc::new(tokio::sync::Semaphore::new(jobs));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (url, out, digest) in pairs {
        // Start from scratch: this measures transfers, not resumes.
        let _ = std::fs::remove_file(&out);
        let (fetcher, gate) = (fetcher.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let done = fetcher
                .download(&url, out.as_ref(), digest.as_ref(), &NoProgress)
                .await?;
            eprintln!("{url}: {} bytes, {}", done.size, done.sha256);
            anyhow::Ok(done.size)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{total} bytes in {secs:.3} s ({:.0} MB/s)",
        total as f64 / secs / 1e6
    );
    Ok(())
}
