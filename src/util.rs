//! Small helpers more than one module needs: a hex digest, a timestamp, shell quoting, and the
//! one way kbin runs independent work in parallel ([`parallel_map`], [`try_parallel_map`]).
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

#[cfg(test)]
mod tests {
    use super::*;

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
