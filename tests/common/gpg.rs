//! Real GnuPG for OpenPGP signature tests: keys made in a throwaway `GNUPGHOME`, exported as the
//! keyring the kbin under test reads through `KBIN_TEST_KEYRINGS` (debug builds only), and
//! detached signatures made with `gpg --armor --detach-sign`, as runc's release script does.
//!
//! `gpg` comes from Debian's `gnupg` (scripts/setup-test-deps): missing, it fails the test, in
//! CI and outside it.

#![allow(dead_code)] // not every test file that says `mod common;` uses it

use std::path::{Path, PathBuf};
use std::process::Command;

/// A GnuPG home with its keys.
pub struct Gpg {
    home: PathBuf,
    gpg: PathBuf,
}

impl Gpg {
    /// A new, empty GnuPG home at `dir` (made).
    pub fn new(dir: &Path) -> Gpg {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        // gpg warns (and some versions refuse) when its home is readable by others.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg {
            home: dir.to_owned(),
            gpg: crate::common::tool("gpg"),
        }
    }

    /// Run gpg (batch, no passphrase) with `args`, at the faked time `at` if given
    /// (`20200101T000000`); its stdout. A failure fails the test.
    pub fn run(&self, at: Option<&str>, args: &[&str], stdin: Option<&str>) -> String {
        let mut c = Command::new(&self.gpg);
        c.env("GNUPGHOME", &self.home).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        if let Some(t) = at {
            c.arg("--faked-system-time").arg(format!("{t}!"));
        }
        c.args(args);
        let out = match stdin {
            None => c.output().unwrap(),
            Some(input) => {
                use std::io::Write;
                let mut child = c
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
        };
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The fingerprints of `uid`'s key: the primary first, then its subkeys.
    pub fn fingerprints(&self, uid: &str) -> Vec<String> {
        self.run(None, &["--with-colons", "--list-keys", uid], None)
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .collect()
    }

    /// A new key for `uid` (`Name <email>`): ed25519, whose primary key has `usage` (`cert`,
    /// `sign`) and expires as `expire` says (`never`, `2y`), made at `at` if given. Its
    /// primary fingerprint.
    pub fn gen_key(&self, uid: &str, usage: &str, expire: &str, at: Option<&str>) -> String {
        self.run(
            at,
            &["--quick-gen-key", uid, "ed25519", usage, expire],
            None,
        );
        self.fingerprints(uid)[0].clone()
    }

    /// A new ed25519 signing subkey of `primary` (expiring as `expire` says); its fingerprint.
    pub fn add_signing_subkey(&self, primary: &str, expire: &str) -> String {
        let before = self.fingerprints(primary);
        self.run(
            None,
            &["--quick-add-key", primary, "ed25519", "sign", expire],
            None,
        );
        self.fingerprints(primary)
            .into_iter()
            .find(|f| !before.contains(f))
            .expect("the new subkey is listed")
    }

    /// Set `primary`'s expiry to `expire` from the (faked) time `at`: a new self-signature.
    pub fn set_expiry(&self, primary: &str, expire: &str, at: Option<&str>) {
        self.run(at, &["--quick-set-expire", primary, expire], None);
    }

    /// Revoke the first subkey of `primary` (no reason given: a hard revocation).
    pub fn revoke_first_subkey(&self, primary: &str) {
        self.run(
            None,
            &["--command-fd", "0", "--edit-key", primary],
            Some("key 1\nrevkey\ny\n0\n\ny\nsave\n"),
        );
    }

    /// The armored public keys of `keys` (fingerprints or uids): a keyring file.
    pub fn export(&self, keys: &[&str]) -> String {
        let mut args = vec!["--armor", "--export"];
        args.extend(keys);
        self.run(None, &args, None)
    }

    /// An armored detached signature over `data` by exactly the key `key` (a fingerprint:
    /// primary or subkey), made at `at` if given, with `digest` (`SHA256`, `SHA1`).
    pub fn sign(&self, key: &str, data: &[u8], at: Option<&str>, digest: &str) -> String {
        self.sign_with(key, data, at, &["--digest-algo", digest])
    }

    /// As [`Gpg::sign`], with `extra` gpg options (`--default-sig-expire 1d`).
    pub fn sign_with(&self, key: &str, data: &[u8], at: Option<&str>, extra: &[&str]) -> String {
        let dir = tempfile::tempdir_in(&self.home).unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, data).unwrap();
        let asc = dir.path().join("data.asc");
        let user = format!("{key}!");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend([
            "--armor",
            "--detach-sign",
            "--local-user",
            &user,
            "--output",
            asc.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        self.run(at, &args, None);
        std::fs::read_to_string(asc).unwrap()
    }
}

impl Drop for Gpg {
    /// Stop the agent this home started (it would otherwise outlive the test).
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "all"])
            .output();
    }
}
