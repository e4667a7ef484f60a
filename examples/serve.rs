//! Serve a directory over HTTP on 127.0.0.1 with the test suite's server (tests/common/server.rs):
//! a loopback mirror for benchmarks, laid out like upstream.
//!
//! ```text
//! cargo build --release --example serve
//! target/release/examples/serve DIR        # prints http://127.0.0.1:PORT, serves until killed
//! ```
//!
//! Files are loaded into memory once and streamed from there (Range supported), so the server
//! costs little CPU next to the client being measured.

#[path = "../tests/common/server.rs"]
mod server;

use std::path::Path;

fn load(root: &Path, dir: &Path, srv: &server::Server) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            load(root, &p, srv)?;
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            srv.put(&format!("/{}", rel.display()), std::fs::read(&p)?);
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: serve DIR");
        std::process::exit(2);
    };
    let srv = server::Server::start();
    load(Path::new(&dir), Path::new(&dir), &srv)?;
    println!("{}", srv.base());
    loop {
        std::thread::park();
    }
}
