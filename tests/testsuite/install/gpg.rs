//! OpenPGP (GPG) signatures end to end: runc's `.asc` beside `runc.{arch}`, made by real gpg
//! with keys in a throwaway GnuPG home, the keyring exported to the directory the kbin under
//! test reads through `KBIN_TEST_KEYRINGS` (debug builds only), and `kbin install` against the
//! local server: accepted and recorded, or refused naming the `.asc` with nothing kept.

use super::*;
use crate::common::gpg::Gpg;

const RUNC: &str = "/opencontainers/runc/releases/download/v1.1.14/runc.amd64";
const RUNC_URL: &str =
    "https://github.com/opencontainers/runc/releases/download/v1.1.14/runc.amd64";
const SIGNER: &str = "Runc Test Signer <runc-signer@example.com>";

/// The fixture with runc unpinned (so the signature, not a pin, is what vouches for it) and
/// upstream's checksum file served, and the keys: the signer's (a certification-only primary
/// with a signing subkey), one that expired before it signed, and one whose signing subkey is
/// revoked, all in the test keyring; a stranger's, in no keyring.
struct Pgp {
    f: Fixture,
    gpg: Gpg,
    keyrings: PathBuf,
    signer: String,
    subkey: String,
    expired: String,
    sig_expired: String,
    revoked_sig: String,
    stranger: String,
    runc: Vec<u8>,
}

impl Pgp {
    fn new() -> Pgp {
        let f = Fixture::new();
        let text = std::fs::read_to_string(&f.manifest).unwrap();
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("\"runc/"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&f.manifest, text).unwrap();
        let body = |p: &str| {
            f.artifacts
                .iter()
                .find(|a| a.path == p)
                .unwrap()
                .body
                .clone()
        };
        let runc = body(RUNC);
        let arm = body(&RUNC.replace("amd64", "arm64"));
        f.server.put(
            "/opencontainers/runc/releases/download/v1.1.14/runc.sha256sum",
            format!(
                "{}  runc.amd64\n{}  runc.arm64\n",
                sha256(&runc),
                sha256(&arm)
            ),
        );

        let gpg = Gpg::new(&f.home.path().join("gnupg"));
        let signer = gpg.gen_key(SIGNER, "cert", "5y", None);
        let subkey = gpg.add_signing_subkey(&signer, "2y");
        // Made in 2020 without expiry, signs in 2023, then (a self-signature of 2021) expires at
        // the start of 2022: the signature was made after the key expired.
        let old = "Old Signer <old@example.com>";
        let expired_key = gpg.gen_key(old, "sign", "never", Some("20200101T000000"));
        let expired = gpg.sign(&expired_key, &runc, Some("20230101T000000"), "SHA256");
        // While that key was valid, a signature that itself expired a day later.
        let sig_expired = gpg.sign_with(
            &expired_key,
            &runc,
            Some("20200601T000000"),
            &["--default-sig-expire", "1d"],
        );
        gpg.set_expiry(&expired_key, "1y", Some("20210101T000000"));
        // A signature by a subkey that is revoked afterwards (no reason: compromise assumed).
        let rev = "Revoked Signer <revoked@example.com>";
        let rev_primary = gpg.gen_key(rev, "cert", "5y", None);
        let rev_sub = gpg.add_signing_subkey(&rev_primary, "2y");
        let revoked_sig = gpg.sign(&rev_sub, &runc, None, "SHA256");
        gpg.revoke_first_subkey(&rev_primary);
        let stranger = gpg.gen_key("Mallory <mallory@example.com>", "sign", "2y", None);

        let keyrings = f.home.path().join("keyrings");
        std::fs::create_dir_all(&keyrings).unwrap();
        std::fs::write(
            keyrings.join("runc.keyring"),
            gpg.export(&[&signer, &expired_key, &rev_primary]),
        )
        .unwrap();
        let p = Pgp {
            f,
            gpg,
            keyrings,
            signer,
            subkey,
            expired,
            sig_expired,
            revoked_sig,
            stranger,
            runc,
        };
        let good = p.gpg.sign(&p.subkey, &p.runc, None, "SHA256");
        p.publish(&good);
        p
    }

    fn publish(&self, asc: &str) {
        self.f.server.put(&format!("{RUNC}.asc"), asc.to_owned());
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = self.f.cmd();
        c.env("KBIN_TEST_KEYRINGS", &self.keyrings);
        c
    }

    fn install(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["install", "1.30", "--no-images", "--only", "runc"];
        args.extend(extra);
        self.cmd().args(&args).output().unwrap()
    }

    /// The receipt's runc artifact.
    fn runc_receipt(&self, name: &str) -> toml::Value {
        let r = self.f.receipt(name);
        r["component"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str() == Some("runc"))
            .unwrap()["artifact"][0]
            .clone()
    }

    /// Nothing of runc is kept: no toolchain, no blob with its bytes, no partial download.
    fn assert_nothing_kept(&self, what: &str) {
        assert!(!self.f.toolchain("1.30").exists(), "{what}");
        for blob in self.f.blobs() {
            assert_ne!(
                std::fs::read(&blob).unwrap(),
                self.runc,
                "{what}: {} kept",
                blob.display()
            );
        }
        let tmp = walk(&self.f.kbin_home().join("cache/tmp"));
        assert!(
            tmp.iter()
                .all(|p| !p.to_string_lossy().contains(".partial")),
            "{what}: {tmp:?}"
        );
    }
}

#[test]
fn a_gpg_signed_runc_is_verified_recorded_shown_and_carried_by_a_mirror() {
    let p = Pgp::new();
    let out = p.install(&["--require-verified"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = p.runc_receipt("1.30");
    assert_eq!(a["pinned"].as_bool(), Some(false));
    assert_eq!(a["signed"]["identity"].as_str(), Some(SIGNER));
    let issuer = format!("OpenPGP key {} (runc.keyring)", p.signer);
    assert_eq!(a["signed"]["issuer"].as_str(), Some(issuer.as_str()));
    // show-versions says who signed, as text and JSON.
    let out = p.cmd().args(["show-versions"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("signed by {SIGNER}")), "{text}");
    let out = p.cmd().args(["show-versions", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vouched = v[0]["vouched"].as_array().unwrap();
    assert!(
        vouched
            .iter()
            .any(|x| x["url"] == RUNC_URL && x["vouch"] == format!("signed by {SIGNER}")),
        "{vouched:?}"
    );

    // Another toolchain from the same blob: the kept record vouches, nothing is asked.
    p.f.server.reset_counters();
    let out = p.install(&["--name", "again"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.f.server.total_requests(), 0);
    assert_eq!(
        p.runc_receipt("again")["signed"]["identity"].as_str(),
        Some(SIGNER)
    );

    // `mirror export` carries the .asc at its upstream path; an air-gapped install from the
    // mirror alone verifies it (the server is not asked).
    let dir = p.f.home.path().join("export");
    let out = p
        .cmd()
        .args([
            "mirror",
            "export",
            "--toolchain",
            "1.30",
            "--no-images",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let asc = dir.join(format!("{}.asc", RUNC.trim_start_matches('/')));
    assert!(asc.is_file(), "{}", asc.display());
    p.f.server.reset_counters();
    let fresh = p.f.home.path().join("fresh");
    let out = p
        .cmd()
        .env("KBIN_HOME", &fresh)
        .env("KBIN_MIRROR", format!("file://{}", dir.display()))
        .args(["install", "1.30", "--no-images", "--only", "runc"])
        .arg("--require-verified")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.f.server.total_requests(), 0);
    let lock = std::fs::read_to_string(fresh.join("toolchains/1.30/toolchain.lock")).unwrap();
    assert!(lock.contains(&issuer), "{lock}");
    // The mirror's .asc replaced by one over other bytes: refused, nothing kept.
    std::fs::write(&asc, p.gpg.sign(&p.subkey, b"other bytes", None, "SHA256")).unwrap();
    let fresh = p.f.home.path().join("fresh2");
    let out = p
        .cmd()
        .env("KBIN_HOME", &fresh)
        .env("KBIN_MIRROR", format!("file://{}", dir.display()))
        .args(["install", "1.30", "--no-images", "--only", "runc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not match the artifact's bytes"),
        "{}",
        stderr(&out)
    );
    assert!(!fresh.join("toolchains/1.30").exists());
}

#[test]
fn a_refused_gpg_signature_is_one_error_naming_the_asc_and_keeps_nothing() {
    let p = Pgp::new();
    let cases: Vec<(&str, String)> = vec![
        (
            "which is not in the keyring",
            p.gpg.sign(&p.stranger, &p.runc, None, "SHA256"),
        ),
        (
            "does not match the artifact's bytes",
            p.gpg.sign(&p.subkey, b"other bytes", None, "SHA256"),
        ),
        ("expired at 2022-01-01T00:00:00Z", p.expired.clone()),
        ("is revoked (no reason given)", p.revoked_sig.clone()),
        (
            "the OpenPGP signature expired at 2020-06-02T00:00:00Z",
            p.sig_expired.clone(),
        ),
        (
            "uses SHA1, a hash too weak to trust",
            p.gpg.sign(&p.subkey, &p.runc, None, "SHA1"),
        ),
        (
            "the OpenPGP signature is malformed",
            "-----BEGIN PGP SIGNATURE-----\n\nbm90IGEgc2lnbmF0dXJl\n-----END PGP SIGNATURE-----\n"
                .to_owned(),
        ),
    ];
    for (want, asc) in cases {
        p.publish(&asc);
        let _ = std::fs::remove_dir_all(p.f.kbin_home());
        let out = p.install(&["-j", "1"]);
        assert!(!out.status.success(), "{want}");
        let err = stderr(&out);
        let errors = err.lines().filter(|l| l.starts_with("error:")).count();
        assert!(
            errors == 1
                && err.contains(&format!(
                    "the OpenPGP signature {RUNC_URL}.asc was refused: nothing of its artifact is kept"
                ))
                && err.contains(want),
            "{want}: {err}"
        );
        p.assert_nothing_kept(want);
    }
    // The unknown key is named, with the keyring.
    p.publish(&p.gpg.sign(&p.stranger, &p.runc, None, "SHA256"));
    let _ = std::fs::remove_dir_all(p.f.kbin_home());
    let err = stderr(&p.install(&[]));
    assert!(
        err.contains(&format!("made by OpenPGP key {}", p.stranger))
            && err.contains("keyrings/runc.keyring"),
        "{err}"
    );
}

#[test]
fn a_missing_asc_leaves_runc_to_its_pin_or_its_checksum_file() {
    let p = Pgp::new();
    p.f.server.remove(&format!("{RUNC}.asc"));
    // Unpinned: upstream's checksum file only, said; --require-verified refuses it.
    let out = p.install(&["--require-verified"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--require-verified: neither pinned nor signed:")
            && err.contains(&format!(
                "{RUNC_URL} (checksum file only: no OpenPGP signature at {RUNC_URL}.asc)"
            )),
        "{err}"
    );
    p.assert_nothing_kept("--require-verified");
    let out = p.install(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("runc.amd64 has no OpenPGP signature upstream"),
        "{}",
        stderr(&out)
    );
    let a = p.runc_receipt("1.30");
    assert!(a.get("signed").is_none(), "{a:?}");
    // Another toolchain from the stored blob: the missing .asc is remembered, not asked again.
    p.f.server.reset_counters();
    let out = p.install(&["--name", "again"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.f.server.total_requests(), 0);
    assert!(
        stderr(&out).contains("runc.amd64 has no OpenPGP signature upstream"),
        "{}",
        stderr(&out)
    );
    assert!(p.runc_receipt("again").get("signed").is_none());
    // Pinned (the fixture's own manifest): its pin vouches, no word about the signature.
    let f = Fixture::new();
    let out = f
        .cmd()
        .args([
            "install",
            "1.30",
            "--no-images",
            "--only",
            "runc",
            "--require-verified",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("OpenPGP"), "{}", stderr(&out));
    assert_eq!(f.server.requests(&format!("{RUNC}.asc")), 1);
}

#[test]
fn the_keyring_check_names_an_unreadable_artifact_and_an_unknown_keyring() {
    use kbin::trust::SigError;
    use kbin::trust::openpgp::Keyring;
    let p = Pgp::new();
    let text = std::fs::read_to_string(p.keyrings.join("runc.keyring")).unwrap();
    let ring = Keyring::parse("runc", "test runc.keyring", &text).unwrap();
    let asc = p.gpg.sign(&p.subkey, &p.runc, None, "SHA256");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // The good signature, straight: the subkey signed, the primary's uid and fingerprint.
    let v = ring.verify(asc.as_bytes(), p.runc.as_slice(), now).unwrap();
    assert_eq!(
        (v.uid.as_str(), v.fingerprint.as_str()),
        (SIGNER, p.signer.as_str())
    );
    assert_eq!(v.signing_key, p.subkey);
    // Bytes that cannot be read are said so, not called a bad signature.
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let err = ring.verify(asc.as_bytes(), Broken, now).unwrap_err();
    assert!(
        matches!(err, SigError::PgpRead(ref m) if m.contains("disk on fire")),
        "{err}"
    );
    // A keyring kbin does not have is one error naming those it has.
    let err = Keyring::named("nope").unwrap_err().to_string();
    assert!(
        err.contains("nope.keyring") && err.contains("it has: runc"),
        "{err}"
    );
}

/// runc pinned, with the real compiled-in keyring, and an `.asc` by a key that keyring does not
/// have (as a new maintainer's would be for an older kbin): said, and left to the pin. Unpinned,
/// the same `.asc` is refused (a_refused_gpg_signature_…).
#[test]
fn a_pinned_runc_signed_by_a_key_the_keyring_lacks_is_left_to_its_pin() {
    let f = Fixture::new();
    let gpg = Gpg::new(&f.home.path().join("gnupg"));
    let key = gpg.gen_key("New Maintainer <new@example.com>", "sign", "1y", None);
    let runc = f
        .artifacts
        .iter()
        .find(|a| a.path == RUNC)
        .unwrap()
        .body
        .clone();
    f.server.put(
        &format!("{RUNC}.asc"),
        gpg.sign(&key, &runc, None, "SHA256"),
    );
    let out = f
        .cmd()
        .args(["install", "1.30", "--no-images", "--only", "runc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "runc.amd64: its signature {RUNC_URL}.asc cannot be checked by this kbin"
        )) && err.contains("not in the keyring"),
        "{err}"
    );
    let lock = std::fs::read_to_string(f.toolchain("1.30").join("toolchain.lock")).unwrap();
    assert!(!lock.contains("OpenPGP"), "{lock}");
}
