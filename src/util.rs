//! Small helpers more than one module needs: a hex digest, a timestamp, shell quoting.
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
}
