//! Small helpers more than one module needs: a hex digest, a timestamp, shell quoting, running a
//! child with a timeout, and the one way kbin runs independent work in parallel
//! ([`parallel_map`], [`try_parallel_map`]).
//!
//! They live here, not in the module that happened to need them first, so that no module
//! reaches into a sibling for a one-liner (and no two copies drift apart).

use sha2::Digest as _;

/// The lowercase hex sha256 of `bytes` (cache keys, lock names).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `t` as RFC 3339 in UTC, to the second (`2026-11-22T23:00:00Z`): what receipts record.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// Why [`run_with_timeout`] has no output to give.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish (or a child of it kept its pipes open) within the timeout; it was killed.
    #[error("{program} did not finish within {timeout:?} (killed)")]
    TimedOut {
        /// The program.
        program: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// Waiting for it failed.
    #[error("cannot wait for {program}")]
    Wait {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a finished child said: its status and both outputs (each kept up to
/// [`CHILD_OUTPUT_LIMIT`] bytes; the rest is read and dropped).
#[derive(Debug, Clone)]
pub struct ChildOutput {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// How much of each of a child's outputs [`run_with_timeout`] keeps.
pub const CHILD_OUTPUT_LIMIT: usize = 16 << 20;

/// Run `cmd` (stdin closed) and wait at most `timeout` for it to exit and close its pipes,
/// draining stdout and stderr on two threads while it runs: a child that writes more than a pipe
/// holds (64 KiB) is never blocked, as it would be if the pipes were read only after it exits.
/// Past the timeout the child is killed and reaped. The one way kbin waits on a child whose
/// output it wants (`ctr`, `crictl`, `systemctl`, a binary's version).
pub fn run_with_timeout(
    cmd: &mut std::process::Command,
    timeout: std::time::Duration,
) -> Result<ChildOutput, ChildError> {
    use std::io::Read as _;
    use std::process::Stdio;
    use std::time::Instant;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ChildError::Spawn {
            program: program.clone(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for (which, pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut p) = pipe {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match p.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let room = CHILD_OUTPUT_LIMIT.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..n.min(room)]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let _ = tx.send((which, kept));
        });
    }
    drop(tx);
    let kill = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
        ChildError::TimedOut {
            program: program.clone(),
            timeout,
        }
    };
    let mut out: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((which, kept)) => out[which] = kept,
            Err(_) => return Err(kill(&mut child)),
        }
    }
    // Both pipes are closed: the child has exited or is about to.
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Ok(None) => return Err(kill(&mut child)),
            Err(source) => return Err(ChildError::Wait { program, source }),
        }
    };
    let [stdout, stderr] = out;
    Ok(ChildOutput {
        status,
        stdout,
        stderr,
    })
}

/// `s` in single quotes for POSIX shells and fish (a `'` is closed, escaped, reopened), always:
/// for lines a user evals, where one quoting style reads best.
pub fn shell_quote_always(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as one shell word: as is when it holds only characters no shell treats specially, else
/// [`shell_quote_always`]. For commands shown to be copied (a build's rerun line).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_owned()
    } else {
        shell_quote_always(s)
    }
}

/// An error and its causes on one line, `: `-separated (reqwest's and git2's own messages hide
/// the useful part in their sources).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The number of threads this process may run at once (at least 1): what CPU-bound work is
/// bounded to.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `f` over `items` on at most `threads` scoped threads (never more than there are items), the
/// results in input order. Each thread takes the next item left, so unequal items balance out.
/// CPU-bound work passes [`cores`]; work that mostly waits (fsync) may pass more. A panic in
/// `f` is raised again here.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let done = run_pool(items, threads, &stop, |t| Some(f(t)));
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (i, r) in done {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every item is taken by exactly one thread"))
        .collect()
}

/// [`parallel_map`] for work that can fail: once an item fails, no thread takes a new one, and
/// the error of the first failed item (in input order) is returned.
pub fn try_parallel_map<T: Sync, R: Send, E: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut done = run_pool(items, threads, &stop, |t| {
        let r = f(t);
        if r.is_err() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Some(r)
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The pool under both maps: (index, result) of every item taken before `stop` was set.
fn run_pool<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    stop: &std::sync::atomic::AtomicBool,
    f: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<(usize, R)> {
    use std::sync::atomic::Ordering;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            if let Some(r) = f(item) {
                out.push((i, r));
            }
        }
        out
    };
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return work();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The last `n` lines of the file at `path` (fewer if it has fewer; none if it cannot be read),
/// read from its end: a build or component log may be far larger than what is shown of it.
pub fn tail_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Enough for n long lines; a longer line is shown cut at its start.
    let want = (n as u64).saturating_mul(1024).max(64 << 10).min(len);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(len - want)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_reads_the_last_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(tail_lines(&p, 2), ["line 99998", "line 99999"]);
        std::fs::write(&p, "one\ntwo").unwrap();
        assert_eq!(tail_lines(&p, 5), ["one", "two"]);
        assert!(tail_lines(&dir.path().join("missing"), 3).is_empty());
    }

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        let t = time::macros::datetime!(2026-11-22 23:00:00.75 +01:00);
        assert_eq!(rfc3339(t), "2026-11-22T22:00:00Z");
        let now = now_rfc3339();
        assert!(
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("GOFLAGS=-mod=vendor"), "GOFLAGS=-mod=vendor");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote_always("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_child_writing_a_mebibyte_to_both_pipes_finishes_promptly_with_its_output_kept() {
        // Over 64 KiB on each pipe: a waiter that reads only after the exit would block the
        // child until the timeout killed it.
        let began = std::time::Instant::now();
        let out = run_with_timeout(
            std::process::Command::new("sh").args([
                "-c",
                "head -c 1048576 /dev/zero | tr '\\0' o; head -c 1048576 /dev/zero | tr '\\0' e >&2",
            ]),
            std::time::Duration::from_secs(20),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 1 << 20);
        assert!(out.stdout.iter().all(|b| *b == b'o'));
        assert_eq!(out.stderr.len(), 1 << 20);
        assert!(out.stderr.iter().all(|b| *b == b'e'));
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
    }

    #[test]
    fn a_child_past_its_timeout_is_killed_and_reaped() {
        let began = std::time::Instant::now();
        let e = run_with_timeout(
            std::process::Command::new("sleep").arg("30"),
            std::time::Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, ChildError::TimedOut { .. }), "{e}");
        assert!(began.elapsed() < std::time::Duration::from_secs(10));
        let e = run_with_timeout(
            &mut std::process::Command::new("/nonexistent/kbin-test"),
            std::time::Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, ChildError::Spawn { .. }), "{e}");
    }

    #[test]
    fn sha256_hex_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn parallel_map_keeps_input_order_on_many_threads() {
        let items: Vec<u64> = (0..1000).collect();
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let out = parallel_map(&items, 8, |x| {
            seen.lock().unwrap().insert(std::thread::current().id());
            x * 2
        });
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert!(parallel_map(&[] as &[u8], 4, |x| *x).is_empty());
        assert_eq!(parallel_map(&[1, 2], 1, |x| x + 1), [2, 3]);
    }

    #[test]
    fn try_parallel_map_returns_the_first_error_in_input_order_and_stops_taking_work() {
        let items: Vec<u32> = (0..10_000).collect();
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let r = try_parallel_map(&items, 4, |x| {
            ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if *x == 3 || *x == 5 { Err(*x) } else { Ok(*x) }
        });
        assert_eq!(r, Err(3));
        assert!(
            ran.load(std::sync::atomic::Ordering::Relaxed) < items.len(),
            "the threads stopped taking work after the failure"
        );
        assert_eq!(
            try_parallel_map(&[1u8, 2], 2, |x| Ok::<_, ()>(*x)),
            Ok(vec![1, 2])
        );
    }
}
