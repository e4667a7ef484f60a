//! Source repositories fetched over git's smart HTTP protocol through kbin's own transport
//! (src/source/http.rs: reqwest on rustls, registered with libgit2, which is built without
//! OpenSSL), against real `git http-backend` behind a small CGI server on 127.0.0.1.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::git;

/// What the server answers: git's CGI, or a fixed failure.
#[derive(Clone, Copy)]
enum Mode {
    Backend,
    Status(u16),
    NotSmart,
}

/// An HTTP/1.1 server on 127.0.0.1 handing every request to `git http-backend` (CGI) for the
/// repositories under `root`, one thread per connection, `Connection: close`.
struct Server {
    port: u16,
}

impl Server {
    fn start(root: &Path, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let root = root.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let root = root.clone();
                std::thread::spawn(move || serve(conn, &root, mode));
            }
        });
        Server { port }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

fn serve(conn: TcpStream, root: &Path, mode: Mode) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut body = Vec::new();
    if let Ok(n) = header("content-length").parse::<usize>() {
        body.resize(n, 0);
        reader.read_exact(&mut body).unwrap();
    }
    let mut out = conn;
    match mode {
        Mode::Status(code) => {
            write!(
                out,
                "HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            return;
        }
        Mode::NotSmart => {
            let text = "0123456789abcdef refs/heads/main\n";
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
            .unwrap();
            return;
        }
        Mode::Backend => {}
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git http-backend: run scripts/setup-test-deps");
    let mut stdin = cgi.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = cgi.wait_with_output().unwrap();
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            output
                .stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .expect("CGI headers");
    let head = String::from_utf8_lossy(&output.stdout[..split.0]).to_string();
    let payload = &output.stdout[split.0 + split.1..];
    let mut status = "200 OK".to_owned();
    let mut lines = Vec::new();
    for l in head.lines() {
        match l.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            _ => lines.push(l.to_owned()),
        }
    }
    write!(out, "HTTP/1.1 {status}\r\n").unwrap();
    for l in lines {
        write!(out, "{l}\r\n").unwrap();
    }
    write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )
    .unwrap();
    out.write_all(payload).unwrap();
}

/// A bare repository `name.git` under `root` with one commit tagged v1.0 (and a second commit
/// on main past it); the tag's commit.
fn bare_repo(root: &Path, name: &str) -> String {
    let work = root.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), "first\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["tag", "v1.0"]);
    let tagged = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("README"), "second\n").unwrap();
    git(&work, &["commit", "-q", "-am", "second"]);
    let bare = root.join(format!("{name}.git"));
    let status = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    tagged
}

fn mirror_dir(tmp: &Path) -> PathBuf {
    tmp.join("mirror.git")
}

#[test]
fn a_tag_is_fetched_and_checked_out_over_smart_http_through_kbins_transport() {
    let tmp = tempfile::tempdir().unwrap();
    let tagged = bare_repo(tmp.path(), "proj");
    let server = Server::start(tmp.path(), Mode::Backend);
    let url = server.url("proj.git");

    let fetched = kbin::source::git::fetch_ref(&mirror_dir(tmp.path()), &url, "v1.0")
        .unwrap_or_else(|e| panic!("fetch over http: {}", kbin::util::chain(&e)));
    assert_eq!(fetched.commit, tagged, "the tag's commit");

    let dest = tmp.path().join("checkout");
    kbin::source::git::checkout(&mirror_dir(tmp.path()), &url, &fetched.commit, &dest).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("README")).unwrap(),
        "first\n"
    );

    // The branch head, a second round of negotiation against the same mirror.
    let head = kbin::source::git::fetch_ref(&mirror_dir(tmp.path()), &url, "main").unwrap();
    assert_ne!(head.commit, tagged);
}

#[test]
fn http_failures_are_one_clear_error_each() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (Mode::Status(404), "HTTP 404"),
        (Mode::Status(401), "kbin sends no credentials"),
        (Mode::NotSmart, "is not a git smart HTTP server"),
    ];
    for (i, (mode, expected)) in cases.into_iter().enumerate() {
        let server = Server::start(tmp.path(), mode);
        let mirror = tmp.path().join(format!("m{i}.git"));
        let e = kbin::source::git::fetch_ref(&mirror, &server.url("proj.git"), "v1.0")
            .expect_err("a failing server");
        let msg = kbin::util::chain(&e);
        assert!(msg.contains(expected), "{expected:?} not in {msg:?}");
        assert!(
            msg.contains("/proj.git/info/refs"),
            "the URL is named: {msg}"
        );
    }
}
