//! Parsing upstream checksum files: a bare digest (`kubectl.sha256`), `sha256sum`/`sha512sum`
//! lines (`<hex>  <name>`, `<hex> *<name>`), or BSD tags (`SHA256 (<name>) = <hex>`), each
//! possibly inside an OpenPGP clear-signed message (runc's `runc.sha256sum` is one). The
//! algorithm follows from the hex length (64: sha256, 128: sha512).

use crate::manifest::{Digest, DigestAlgo};

/// Why a checksum file gave no digest for the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChecksumParse {
    /// The file parses, but no line names the artifact.
    NotFound,
    /// A line is not in a known format.
    Format(String),
}

fn digest_of(hex: &str) -> Option<Digest> {
    let hex = hex.to_ascii_lowercase();
    let algo = match hex.len() {
        64 => DigestAlgo::Sha256,
        128 => DigestAlgo::Sha512,
        _ => return None,
    };
    Digest::new(algo, &hex).ok()
}

/// The name part of a path (`./bin/x` → `x`).
fn base(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The text an OpenPGP clear-signed message (RFC 9580 §7) signs, dash-escaping undone; `text`
/// itself when it is not one. The signature is not checked here: the artifact's own signature
/// (its `.asc`) is, at install.
pub(crate) fn cleartext(text: &str) -> Result<std::borrow::Cow<'_, str>, ChecksumParse> {
    const BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
    if text.trim_start().lines().next().map(str::trim_end) != Some(BEGIN) {
        return Ok(std::borrow::Cow::Borrowed(text));
    }
    let mut lines = text.trim_start().lines().skip(1);
    // Armor headers (`Hash: SHA512`) up to the first empty line.
    for l in lines.by_ref() {
        if l.trim_end().is_empty() {
            break;
        }
    }
    let mut body = String::new();
    for l in lines {
        if l.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            return Ok(std::borrow::Cow::Owned(body));
        }
        body.push_str(l.strip_prefix("- ").unwrap_or(l));
        body.push('\n');
    }
    Err(ChecksumParse::Format(
        "a clear-signed message without its signature block".into(),
    ))
}

/// The digest for `file_name` in the checksum file `text`. A file holding a single digest with
/// no name is that digest, whatever the artifact's name.
pub(crate) fn parse(text: &str, file_name: &str) -> Result<Digest, ChecksumParse> {
    let want = base(file_name);
    let text = cleartext(text)?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() {
        return Err(ChecksumParse::Format("the file is empty".into()));
    }
    for line in &lines {
        let (hex, name) = if let Some(rest) = line
            .strip_prefix("SHA256 (")
            .or_else(|| line.strip_prefix("SHA512 ("))
        {
            // BSD tag style.
            let (name, hex) = rest
                .split_once(") = ")
                .ok_or_else(|| ChecksumParse::Format(format!("cannot read the line {line:?}")))?;
            (hex.trim(), Some(name))
        } else {
            let mut parts = line.splitn(2, char::is_whitespace);
            let hex = parts.next().unwrap_or_default();
            let name = parts
                .next()
                .map(|n| n.trim_start().trim_start_matches('*'))
                .filter(|n| !n.is_empty());
            (hex, name)
        };
        let digest = digest_of(hex).ok_or_else(|| {
            ChecksumParse::Format(format!(
                "{hex:?} is not a sha256 or sha512 digest (64 or 128 hex characters)"
            ))
        })?;
        match name {
            None if lines.len() == 1 => return Ok(digest),
            None => {
                return Err(ChecksumParse::Format(
                    "several digests without file names".into(),
                ));
            }
            Some(n) if n == file_name || base(n) == want => return Ok(digest),
            Some(_) => {}
        }
    }
    Err(ChecksumParse::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn bare_hex_is_the_digest() {
        let d = parse(&format!("{A}\n"), "kubectl").unwrap();
        assert_eq!(d.to_string(), format!("sha256:{A}"));
        let long = "c".repeat(128);
        let d = parse(&long, "kubernetes-server-linux-amd64.tar.gz").unwrap();
        assert_eq!(d.algo(), DigestAlgo::Sha512);
    }

    #[test]
    fn sha256sum_lines_pick_the_artifact() {
        let text =
            format!("{A}  etcd-v3.5.16-darwin-amd64.zip\n{B}  etcd-v3.5.16-linux-amd64.tar.gz\n");
        let d = parse(&text, "etcd-v3.5.16-linux-amd64.tar.gz").unwrap();
        assert_eq!(d.hex(), B);
        let d = parse(&format!("{B} *./runc.amd64\n"), "runc.amd64").unwrap();
        assert_eq!(d.hex(), B);
    }

    /// runc's `runc.sha256sum` as its release script makes it (`gpg --clear-sign`).
    #[test]
    fn a_clear_signed_checksum_file_is_read_inside_its_signature() {
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{A}  runc.amd64\n{B}  runc.arm64\n\
             - -- a dash-escaped line\n-----BEGIN PGP SIGNATURE-----\n\niHUEARYIAB0WIQ\n=abcd\n\
             -----END PGP SIGNATURE-----\n"
        );
        assert_eq!(parse(&text, "runc.arm64").unwrap().hex(), B);
        assert_eq!(parse(&text, "runc.amd64").unwrap().hex(), A);
        assert_eq!(
            cleartext(&text).unwrap(),
            format!("{A}  runc.amd64\n{B}  runc.arm64\n-- a dash-escaped line\n")
        );
        // Cut before its signature: one clear error, not a digest.
        let cut = &text[..text.find("-----BEGIN PGP SIGNATURE").unwrap()];
        assert_eq!(
            parse(cut, "runc.amd64").unwrap_err(),
            ChecksumParse::Format("a clear-signed message without its signature block".into())
        );
    }

    #[test]
    fn bsd_tags_are_read() {
        let text = format!("SHA256 (crictl.tar.gz) = {A}\n");
        assert_eq!(parse(&text, "crictl.tar.gz").unwrap().hex(), A);
    }

    #[test]
    fn missing_artifact_and_garbage_are_errors() {
        let text = format!("{A}  other.tar.gz\n");
        assert_eq!(parse(&text, "mine.tar.gz"), Err(ChecksumParse::NotFound));
        assert!(matches!(
            parse("<html>not found</html>", "x"),
            Err(ChecksumParse::Format(_))
        ));
        assert!(matches!(parse("", "x"), Err(ChecksumParse::Format(_))));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn cases() -> u32 {
            std::env::var("KBIN_FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(256)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            /// Any text, and any mix of real checksum lines and noise, gives a digest or one
            /// error, never a panic; a digest found is one the text holds for the artifact.
            #[test]
            fn checksum_files_from_anywhere_give_a_digest_or_an_error(
                noise in "\\PC{0,200}",
                lines in proptest::collection::vec(
                    ("[0-9a-f]{64}|[0-9a-f]{128}|[0-9a-fA-F]{0,70}", "[ *.]{0,3}", "[a-z0-9.-]{0,20}"),
                    0..5,
                ),
                name in "[a-z0-9.-]{1,20}",
            ) {
                let mut text = noise;
                for (hex, sep, file) in &lines {
                    text.push_str(&format!("\n{hex} {sep}{file}"));
                }
                if let Ok(d) = parse(&text, &name) {
                    prop_assert!(text.to_lowercase().contains(d.hex()), "{d} not in {text:?}");
                }
            }
        }
    }
}
