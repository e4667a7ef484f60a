//! The cluster's add-ons as `kbin gen cluster` writes them (addons/coredns.yaml): every object
//! parses, agrees with the rest of the tree (the kubelets' clusterDNS and clusterDomain, the
//! image the workers' bundle carries, by digest), and re-generation is byte-identical. Applying
//! them is tested in up.rs (kbin's server-side apply against the stand-in API server) and
//! ansible.rs (site.yml); against a real API server by scripts/e2e-conformance.

use std::path::Path;

use serde_yaml_ng::Value;

use crate::common;
use common::kbin;

fn generate(home: &Path, out: &Path, extra: &[&str]) {
    let o = kbin(home)
        .args(["gen", "cluster", "--toolchain", "t", "--out"])
        .arg(out)
        .args([
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
            "--worker",
            "w2=10.0.0.22",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in addons/coredns.yaml"))
}

#[test]
fn the_dns_addon_agrees_with_the_kubelets_and_runs_the_bundled_coredns_image_by_digest() {
    let home = tempfile::tempdir().unwrap();
    common::toolchain::standin_toolchain(home.path(), "t", "1.30.14");
    common::toolchain::add_pause_image(home.path(), "t", "3.9");
    common::toolchain::add_image(home.path(), "t", kbin::images::ImageRef::coredns("1.11.1"));
    let out = tempfile::tempdir().unwrap();
    let tree = out.path().join("c");
    generate(home.path(), &tree, &["--cluster-domain", "corp.test"]);
    let file = tree.join("addons/coredns.yaml");
    let objs = docs(&file);
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    // In the order an apply needs them: the account and config before the Deployment.
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Service"
        ]
    );

    // The image: the one the toolchain pulled, by the digest its archive names for containerd.
    let receipt =
        kbin::toolchain::Receipt::load(&kbin::store::Layout::new(home.path()).receipt_path("t"))
            .unwrap();
    let pulled = receipt
        .pulled
        .iter()
        .find(|p| p.name.contains("coredns"))
        .unwrap();
    let dep = find(&objs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let image = pod["containers"][0]["image"].as_str().unwrap();
    assert_eq!(
        image,
        format!(
            "registry.k8s.io/coredns/coredns:v1.11.1@{}",
            pulled.manifest
        )
    );
    // ... which is the manifest the workers' bundled archive holds under that name.
    let archive =
        std::fs::read(tree.join("nodes/w1/var/lib/kbin/images/coredns-v1.11.1.tar")).unwrap();
    let mut ar = tar::Archive::new(archive.as_slice());
    let index: serde_json::Value = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("index.json"))
        .map(|e| serde_json::from_reader(e).unwrap())
        .unwrap();
    assert_eq!(index["manifests"][0]["digest"], pulled.manifest.to_string());
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        image.split('@').next().unwrap()
    );
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");

    // The Service is the address every kubelet gives pods; the Corefile serves their domain.
    let kubelet: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(tree.join("nodes/w1/var/lib/kubelet/config.yaml")).unwrap(),
    )
    .unwrap();
    let svc = find(&objs, "Service");
    assert_eq!(svc["metadata"]["name"], "kube-dns");
    assert_eq!(svc["spec"]["clusterIP"], kubelet["clusterDNS"][0]);
    let ports: Vec<(i64, &str)> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(ports, [(53, "UDP"), (53, "TCP"), (9153, "TCP")]);
    assert_eq!(kubelet["clusterDomain"], "corp.test");
    let corefile = find(&objs, "ConfigMap")["data"]["Corefile"]
        .as_str()
        .unwrap();
    assert!(
        corefile.contains("kubernetes corp.test in-addr.arpa ip6.arpa {"),
        "{corefile}"
    );
    assert!(
        corefile.contains("forward . /etc/resolv.conf"),
        "{corefile}"
    );
    // Every name the objects use of each other resolves.
    assert_eq!(
        pod["serviceAccountName"],
        find(&objs, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"],
        find(&objs, "ConfigMap")["metadata"]["name"]
    );
    let binding = find(&objs, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"]["name"],
        find(&objs, "ClusterRole")["metadata"]["name"]
    );
    assert_eq!(binding["subjects"][0]["name"], "coredns");
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    for o in ["Deployment", "PodDisruptionBudget"] {
        let sel = &find(&objs, o)["spec"]["selector"]["matchLabels"];
        assert_eq!(sel, labels, "{o}'s selector picks the CoreDNS pods");
    }
    assert_eq!(svc["spec"]["selector"], *labels);
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(
        pod["dnsPolicy"], "Default",
        "CoreDNS must not resolve through itself"
    );
    assert_eq!(
        find(&objs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );

    // Byte-identical on a re-run; `--diff` names the add-on when it would change.
    let first = std::fs::read(&file).unwrap();
    generate(home.path(), &tree, &["--cluster-domain", "corp.test"]);
    assert_eq!(std::fs::read(&file).unwrap(), first);
    std::fs::write(&file, b"# edited by hand\n").unwrap();
    let o = kbin(home.path())
        .args(["gen", "cluster", "--diff", "--toolchain", "t", "--out"])
        .arg(&tree)
        .args([
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
            "--worker",
            "w2=10.0.0.22",
            "--cluster-domain",
            "corp.test",
        ])
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(diff.contains("addons/coredns.yaml"), "{diff}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"# edited by hand\n",
        "--diff writes nothing"
    );
}

#[test]
fn without_a_pulled_image_the_addon_names_it_by_tag_and_says_why() {
    let home = tempfile::tempdir().unwrap();
    common::toolchain::standin_toolchain(home.path(), "t", "1.30.14");
    let out = tempfile::tempdir().unwrap();
    let tree = out.path().join("c");
    generate(home.path(), &tree, &[]);
    let file = tree.join("addons/coredns.yaml");
    let objs = docs(&file);
    let image = find(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(image, "registry.k8s.io/coredns/coredns:v1.11.1");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("named by tag only"), "{text}");
}
