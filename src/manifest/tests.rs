//! Loader tests: the embedded manifest is valid, and each kind of malformed manifest gets its own
//! clear error.

use super::*;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, Origin::File("test.toml".into()))
}

/// The embedded manifest with `from` replaced by `to` (which must occur).
fn edited(from: &str, to: &str) -> String {
    assert!(
        EMBEDDED.contains(from),
        "test edit target {from:?} not in manifest"
    );
    EMBEDDED.replacen(from, to, 1)
}

#[test]
fn embedded_manifest_is_valid() {
    let m = Manifest::embedded().unwrap();
    assert_eq!(m.origin, Origin::Embedded);
    for name in REQUIRED_COMPONENTS {
        assert!(m.component(name).is_some(), "{name}");
    }
    let minors: Vec<String> = m.releases.keys().map(|k| k.to_string()).collect();
    for n in 28..=36 {
        let minor = format!("1.{n}");
        assert!(minors.contains(&minor), "{minor}");
        assert!(
            m.releases[&minor.parse().unwrap()].defaults.is_ok(),
            "{minor}"
        );
    }
    assert!(m.pins.len() > 1000);
}

#[test]
fn kubernetes_binaries_come_from_per_binary_files_when_pinned() {
    let m = Manifest::embedded().unwrap();
    let k = m.component("kubernetes").unwrap();
    let v = Version::parse("1.30.4").unwrap();
    let kubelet = m.artifact_for(k, "kubelet", &v, Arch::Amd64).unwrap();
    assert_eq!(
        kubelet.url,
        "https://dl.k8s.io/release/v1.30.4/bin/linux/amd64/kubelet"
    );
    assert!(kubelet.pinned.is_some());
    // kube-apiserver 1.30.4 has no pin anywhere: the first template, unpinned.
    let api = m
        .artifact_for(k, "kube-apiserver", &v, Arch::Amd64)
        .unwrap();
    assert_eq!(api.index, 0);
    assert!(api.pinned.is_none());
    // 1.30.14's server tarball is pinned (sha512), so it is preferred for kube-apiserver.
    let v = Version::parse("1.30.14").unwrap();
    let api = m
        .artifact_for(k, "kube-apiserver", &v, Arch::Arm64)
        .unwrap();
    assert_eq!(api.index, 1);
    assert_eq!(
        api.member.as_deref(),
        Some("kubernetes/server/bin/kube-apiserver")
    );
    assert_eq!(api.pinned.unwrap().algo(), DigestAlgo::Sha512);
}

#[test]
fn kubernetes_binaries_name_their_detached_signatures_but_a_pin_needs_none() {
    let m = Manifest::embedded().unwrap();
    let k = m.component(KUBERNETES).unwrap();
    let v = m.releases[&"1.30".parse::<Minor>().unwrap()].latest.clone();
    let a = m.artifact_for(k, "kubelet", &v, Arch::Amd64).unwrap();
    let (d, signer) = a.detached.as_ref().expect("dl.k8s.io's .sig and .cert");
    assert_eq!(
        d.sig,
        format!("https://dl.k8s.io/release/v{v}/bin/linux/amd64/kubelet.sig")
    );
    assert_eq!(
        d.bundle_url(),
        format!("https://dl.k8s.io/release/v{v}/bin/linux/amd64/kubelet.sigstore.json")
    );
    assert_eq!(
        signer.identity,
        "krel-staging@k8s-releng-prod.iam.gserviceaccount.com"
    );
    // Pinned: nothing for install to verify beyond the pin (no .sig or .cert fetched).
    assert!(a.pinned.is_some());
    assert_eq!(a.signature, None);
}

#[test]
fn containerd_names_its_release_attestation_from_2_0_1_and_a_signer_at_the_release_tag() {
    let m = Manifest::embedded().unwrap();
    let c = m.component("containerd").unwrap();
    let at = |v: &str| {
        m.artifact_for(c, "containerd", &Version::parse(v).unwrap(), Arch::Amd64)
            .unwrap()
    };
    // 1.7.x and 2.0.0 publish none (2.0.0's is in GitHub's API only): none is asked for.
    assert_eq!(at("1.7.23").signature, None);
    assert_eq!(at("2.0.0").signature, None);
    let (url, signer) = at("2.3.4").signature.unwrap();
    assert_eq!(
        url,
        "https://github.com/containerd/containerd/releases/download/v2.3.4/containerd-2.3.4-attestation.intoto.jsonl"
    );
    assert_eq!(
        signer.identity,
        "https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/v2.3.4"
    );
    assert_eq!(signer.issuer, "https://token.actions.githubusercontent.com");
}

#[test]
fn a_bad_signed_since_is_refused_with_the_artifact_named() {
    let signed = "signed-since = \"2.0.1\"\n";
    let e = parse(&edited(signed, "signed-since = \"two\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("containerd-{version}-linux-{arch}.tar.gz")
            && e.contains("\"two\", which is not a version"),
        "{e}"
    );
    let e = parse(&edited(
        "signature = \"https://github.com/containerd/containerd/releases/download/v{version}/containerd-{version}-attestation.intoto.jsonl\"\n",
        "",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("has signed-since but no signature"), "{e}");
}

#[test]
fn archive_members_follow_the_layout() {
    let m = Manifest::embedded().unwrap();
    let etcd = m.component("etcd").unwrap();
    let v = Version::parse("3.5.16").unwrap();
    let c = m.artifact_for(etcd, "etcdctl", &v, Arch::Arm64).unwrap();
    assert_eq!(
        c.member.as_deref(),
        Some("etcd-v3.5.16-linux-arm64/etcdctl")
    );
    assert_eq!(
        c.url,
        "https://github.com/etcd-io/etcd/releases/download/v3.5.16/etcd-v3.5.16-linux-arm64.tar.gz"
    );
    assert!(c.pinned.is_some());
}

/// The embedded manifest with the `defaults = …` line of `minor` removed.
fn without_defaults_line(minor: &str) -> String {
    let start = EMBEDDED.find(&format!("[release.\"{minor}\"]")).unwrap();
    let line = EMBEDDED[start..]
        .lines()
        .find(|l| l.starts_with("defaults = "))
        .unwrap();
    edited(&format!("{line}\n"), "")
}

#[test]
fn malformed_manifests_each_get_one_clear_error() {
    // (what, manifest text, a phrase the error must contain)
    let cases: Vec<(&str, String, &str)> = vec![
        ("not toml", "schema = [".into(), "is not valid"),
        (
            "no schema",
            EMBEDDED.replacen("schema = 1", "", 1),
            "schema 0",
        ),
        (
            "wrong schema",
            edited("schema = 1", "schema = 2"),
            "has schema 2, but this kbin reads schema 1",
        ),
        (
            "schema not a number",
            edited("schema = 1", "schema = \"1\""),
            "has schema -1",
        ),
        (
            "missing component",
            edited("name = \"crictl\"", "name = \"crictl-renamed\""),
            "component \"crictl\" is missing",
        ),
        (
            "malformed digest",
            edited(
                "\"cni-plugins/amd64/0.9.1\" = \"sha256:",
                "\"cni-plugins/amd64/0.9.1\" = \"sha256:zz",
            ),
            "pin \"cni-plugins/amd64/0.9.1\"",
        ),
        (
            "digest of the wrong algorithm",
            edited(
                "\"cni-plugins/amd64/0.9.1\" = \"sha256:",
                "\"cni-plugins/amd64/0.9.1\" = \"md5:",
            ),
            "only sha256 and sha512",
        ),
        (
            "pin key without arch",
            edited("\"cni-plugins/amd64/0.9.1\"", "\"cni-plugins-0.9.1\""),
            "is not \"<pin>/<arch>/<version>\"",
        ),
        (
            "pin with an unknown arch",
            edited("\"cni-plugins/amd64/0.9.1\"", "\"cni-plugins/s390x/0.9.1\""),
            "unknown architecture",
        ),
        (
            "minor with no default for a component",
            edited("crictl = \"1.30.0\" }", "}").replacen(", }", " }", 1),
            "has no default version for component \"crictl\"",
        ),
        (
            "minor with no defaults at all",
            without_defaults_line("1.30"),
            "[release.\"1.30\"] has no defaults",
        ),
        (
            "latest not among patches",
            edited("latest = \"1.30.14\"", "latest = \"1.30.15\""),
            "latest 1.30.15 is not among its patches",
        ),
        (
            "bad minor key",
            edited("[release.\"1.30\"]", "[release.\"1.x\"]"),
            "is not a minor version",
        ),
        (
            "rule for an unknown component",
            edited(
                "component = \"etcd\"\nkubernetes",
                "component = \"etcdx\"\nkubernetes",
            ),
            "names component \"etcdx\"",
        ),
        (
            "rule with a bad range",
            edited("requires = \">=3.5.0, <3.6.0\"", "requires = \"three\""),
            "is not a version range",
        ),
        (
            "unknown field",
            edited("schema = 1", "schema = 1\nflavour = \"x\""),
            "unknown field",
        ),
        (
            "archive without layout",
            edited("layout = \"crictl\"\n", ""),
            "needs a layout",
        ),
        (
            "artifact URL that is not a URL",
            edited(
                "url = \"https://github.com/kubernetes-sigs",
                "url = \"github.com/kubernetes-sigs",
            ),
            "is not an http(s):// or file:// URL",
        ),
        (
            "a binary in two components",
            edited(
                "binaries = [\"crictl\"]",
                "binaries = [\"crictl\", \"etcd\"]",
            ),
            "provided by both",
        ),
        (
            "detached signatures without a signer",
            edited(
                "signer = { identity = \"krel-staging@",
                "# signer = { identity = \"krel-staging@",
            ),
            "has a signature but the component has no [component.signer]",
        ),
        (
            "a bundle and detached signatures on one artifact",
            edited(
                "detached = { sig = \"https://",
                "signature = \"https://dl.k8s.io/x.sigstore.json\"\ndetached = { sig = \"https://",
            ),
            "both a signature (bundle) and detached signatures",
        ),
        (
            "a detached .sig that is not a URL",
            edited(
                "detached = { sig = \"https://dl.k8s.io",
                "detached = { sig = \"dl.k8s.io",
            ),
            "artifact detached sig \"dl.k8s.io",
        ),
        (
            "an image signer whose issuer is not an https URL",
            edited(
                "issuer = \"https://accounts.google.com\"\n",
                "issuer = \"accounts.google.com\"\n",
            ),
            "[images.signer]: issuer \"accounts.google.com\" is not an https URL",
        ),
        (
            "an image signer with an empty identity",
            edited(
                "identity = \"krel-trust@k8s-releng-prod.iam.gserviceaccount.com\"",
                "identity = \"\"",
            ),
            "[images.signer]: identity \"\" is not a certificate identity",
        ),
        (
            "an image signer without an issuer",
            edited("issuer = \"https://accounts.google.com\"\n", ""),
            "missing field `issuer`",
        ),
        (
            "a component signer whose issuer is not an https URL",
            edited(
                "issuer = \"https://token.actions.githubusercontent.com\" }",
                "issuer = \"token.actions.githubusercontent.com\" }",
            ),
            "component \"containerd\": signer: issuer \"token.actions.githubusercontent.com\" is not an https URL",
        ),
        (
            "an OpenPGP signature without a keyring",
            edited("keyring = \"runc\"", "# keyring = \"runc\""),
            "has an asc (OpenPGP signature) but the component names no keyring",
        ),
        (
            "a keyring kbin does not have",
            edited("keyring = \"runc\"", "keyring = \"runcc\""),
            "keyring \"runcc\" is not a keyring kbin has (it has: runc)",
        ),
        (
            "an .asc that is not a URL",
            edited(
                "asc = \"https://github.com/opencontainers",
                "asc = \"github.com/opencontainers",
            ),
            "artifact asc \"github.com/opencontainers",
        ),
    ];
    for (what, text, phrase) in cases {
        match parse(&text) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(phrase), "{what}: {msg:?} lacks {phrase:?}");
                assert!(
                    msg.contains("test.toml"),
                    "{what}: {msg:?} does not name the file"
                );
            }
        }
    }
}

#[test]
fn the_image_signer_comes_from_the_manifest_and_a_user_manifest_overrides_it() {
    let builtin = Manifest::embedded().unwrap().image_signer;
    assert_eq!(
        builtin.identity,
        "krel-trust@k8s-releng-prod.iam.gserviceaccount.com"
    );
    assert_eq!(builtin.issuer, "https://accounts.google.com");
    let other = parse(&edited(
        "identity = \"krel-trust@k8s-releng-prod.iam.gserviceaccount.com\"",
        "identity = \"promoter@example.com\"",
    ))
    .unwrap();
    assert_eq!(other.image_signer.identity, "promoter@example.com");
    // Without [images], the built-in signer: leaving the table out never turns checks off.
    let start = EMBEDDED.find("[images.signer]\n").unwrap();
    let end = start + EMBEDDED[start..].find("\n\n").unwrap();
    let without = format!("{}{}", &EMBEDDED[..start], &EMBEDDED[end..]);
    assert!(!without.lines().any(|l| l.starts_with("[images")));
    assert_eq!(parse(&without).unwrap().image_signer, builtin);
}

#[test]
fn unreadable_manifest_names_the_path() {
    let e = Manifest::load(Path::new("/nonexistent/toolchains.toml")).unwrap_err();
    assert!(matches!(e, ManifestError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/toolchains.toml"));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Arbitrary bytes spliced into the manifest never panic the loader.
        #[test]
        fn loader_never_panics_on_corruption(pos in 0usize..EMBEDDED.len(), junk in "[\\x00-\\x7f]{0,8}") {
            let mut text = EMBEDDED.to_string();
            let mut p = pos;
            while !text.is_char_boundary(p) { p -= 1; }
            text.insert_str(p, &junk);
            let _ = parse(&text);
        }

        /// Any digest string either parses to itself or errors; never panics.
        #[test]
        fn digest_parse_round_trips(s in "(sha256|sha512|md5)?:?[0-9a-fA-F]{0,130}") {
            if let Ok(d) = s.parse::<Digest>() {
                prop_assert_eq!(d.to_string(), s);
            }
        }
    }
}

/// Every version of each component the manifest names (release patches and defaults, pins,
/// pinned commits), by component.
fn named_versions(m: &Manifest) -> BTreeMap<String, std::collections::BTreeSet<Version>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<Version>> = BTreeMap::new();
    for r in m.releases.values() {
        out.entry(KUBERNETES.into())
            .or_default()
            .extend(r.patches.iter().cloned());
        if let Ok(d) = &r.defaults {
            for (c, v) in &d.components {
                out.entry(c.clone()).or_default().insert(v.clone());
            }
        }
    }
    // A pin belongs to the component whose artifact's pin template expands to its name.
    let mut pin_owner: BTreeMap<String, String> = BTreeMap::new();
    for c in &m.components {
        for a in &c.artifacts {
            for b in c.binaries.iter().chain(&c.optional_binaries) {
                pin_owner.insert(a.pin.replace("{binary}", b), c.name.clone());
            }
        }
        out.entry(c.name.clone())
            .or_default()
            .extend(c.commits.keys().cloned());
    }
    for k in m.pins.keys() {
        if let Some(c) = pin_owner.get(&k.pin) {
            out.entry(c.clone()).or_default().insert(k.version.clone());
        }
    }
    out
}

#[test]
fn every_component_version_in_the_manifest_has_exactly_one_ships_row() {
    let m = Manifest::embedded().unwrap();
    let named = named_versions(&m);
    for c in &m.components {
        assert!(
            !c.ships.is_empty(),
            "{} has no [[component.ships]] rows",
            c.name
        );
        let versions = &named[&c.name];
        assert!(!versions.is_empty(), "{}", c.name);
        for v in versions {
            let rows: Vec<String> = c
                .ships
                .iter()
                .filter(|s| s.versions.matches(v))
                .map(|s| s.versions.to_string())
                .collect();
            assert_eq!(rows.len(), 1, "{} {v} is covered by {rows:?}", c.name);
            let shipped = c.shipped(v).unwrap();
            assert!(
                !shipped.required.is_empty(),
                "{} {v} ships none of its binaries",
                c.name
            );
        }
    }
    // The pins cover what upstream really published: etcd 3.5 and 3.6, containerd 1.5 to 2.3,
    // CNI plugins 0.9.1 to 1.9.1. Each of those ranges is a row of its own above.
    let cni = &named["cni-plugins"];
    assert!(cni.contains(&Version::new(0, 9, 1)) && cni.contains(&Version::new(1, 9, 1)));
}

#[test]
fn ships_rows_say_what_each_version_really_ships() {
    let m = Manifest::embedded().unwrap();
    let at = |c: &str, v: &str| {
        m.component(c)
            .unwrap()
            .shipped(&Version::parse(v).unwrap())
            .unwrap()
    };
    assert_eq!(at("etcd", "3.4.23").required, ["etcd", "etcdctl"]);
    assert_eq!(
        at("etcd", "3.5.16").required,
        ["etcd", "etcdctl", "etcdutl"]
    );
    assert_eq!(
        at("etcd", "3.6.14").required,
        ["etcd", "etcdctl", "etcdutl"]
    );
    let c1 = at("containerd", "1.7.23");
    assert_eq!(
        c1.required,
        ["containerd", "containerd-shim-runc-v2", "ctr"]
    );
    assert_eq!(
        c1.optional,
        [
            "containerd-shim",
            "containerd-shim-runc-v1",
            "containerd-stress"
        ]
    );
    assert_eq!(at("containerd", "2.0.7").optional, ["containerd-stress"]);
    let has = |v: &str, p: &str| at("cni-plugins", v).optional.iter().any(|b| b == p);
    assert!(has("0.9.1", "flannel") && !has("1.0.0", "flannel"));
    assert!(!has("1.1.1", "dummy") && has("1.2.0", "dummy"));
    assert!(!has("1.2.0", "tap") && has("1.3.0", "tap") && has("1.9.1", "tap"));
    for v in ["0.9.1", "1.9.1"] {
        assert_eq!(
            at("cni-plugins", v).required,
            ["bridge", "host-local", "loopback", "portmap"]
        );
    }
    assert!(
        m.component("etcd")
            .unwrap()
            .shipped(&Version::new(3, 3, 0))
            .is_none()
    );
}

#[test]
fn bad_ships_rows_are_refused_with_the_component_named() {
    let row = "[[component.ships]]\nversions = \">=3.4.0, <3.5.0\"\n";
    for (to, wanted) in [
        (
            "[[component.ships]]\nversions = \"3.4 or so\"\n",
            "is not a version range",
        ),
        (
            "[[component.ships]]\nversions = \">=3.4.0, <3.5.0\"\nbinaries = [\"etcd\", \"etcdfoo\"]\nsource = \"x\"\n[[component.ships]]\nversions = \"<0.0.1\"\n",
            "lists \"etcdfoo\"",
        ),
    ] {
        let text = edited(row, to);
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("component \"etcd\"") && e.contains(wanted),
            "{e}"
        );
    }
    // The rest of the source line becomes a comment.
    let e = parse(&edited(
        "source = \"etcd-io/etcd@c8b78319672a",
        "source = \" \" # ",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("component \"etcd\"") && e.contains("no source"),
        "{e}"
    );
}

#[test]
fn no_version_falls_in_two_release_rows_of_a_recipe() {
    let m = Manifest::embedded().unwrap();
    let named = named_versions(&m);
    for c in &m.components {
        let Some(recipe) = &c.recipe else { continue };
        for v in named.get(&c.name).into_iter().flatten() {
            let rows: Vec<String> = recipe
                .releases
                .iter()
                .filter(|r| r.versions.matches(v))
                .map(|r| r.versions.to_string())
                .collect();
            assert!(rows.len() <= 1, "{} {v} is covered by {rows:?}", c.name);
        }
    }
    // runc: seccomp at every version (pods need it); libpathrs from 1.5, droppable.
    let runc = m.component("runc").unwrap().recipe.as_ref().unwrap();
    for v in ["1.1.5", "1.1.14", "1.2.0", "1.4.3", "1.5.1"] {
        let row = runc.release(&Version::parse(v).unwrap()).unwrap();
        assert!(row.tags.contains(&"seccomp".to_owned()), "runc {v}");
        assert!(row.drops.iter().all(|d| d.tag != "seccomp"), "runc {v}");
    }
    let row = runc.release(&Version::new(1, 5, 1)).unwrap();
    assert_eq!(row.drops[0].tag, "libpathrs");
    assert_eq!(row.drops[0].env["RUNC_BUILDTAGS"], "-libpathrs");
}
