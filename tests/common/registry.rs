//! A registry on the test server: real OCI images (a gzipped layer tar holding one file, an
//! image config with the layer's diff_id, a manifest per architecture, an index over them)
//! served at the distribution API's paths, as registry.k8s.io serves them.

use sha2::Digest as _;

use super::server::Server;

/// One published image.
#[allow(dead_code)] // not every test file that says `mod common;` uses every field
#[derive(Debug, Clone)]
pub struct FakeImage {
    /// `registry.k8s.io/pause:3.10.1` (the name kbin asks for; the server is its mirror).
    pub name: String,
    /// The index the tag points at.
    pub index_digest: String,
    /// Per architecture: (manifest digest, [config digest, layer digest]).
    pub manifests: Vec<(String, String, Vec<String>)>,
    /// Server paths of every blob.
    pub blob_paths: Vec<String>,
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Append `bytes` as `path` with `mode` and mtime 0 (reproducible, as kbin's own archives).
fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, bytes: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, path, bytes).unwrap();
}

/// A gzipped tar holding `/<file>` with `content`, and the sha256 of the tar (its diff_id).
fn layer(file: &str, content: &[u8]) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, file, 0o755, content);
    let raw = tar.into_inner().unwrap();
    let diff_id = sha(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// One platform's image of `<repo>:<tag>`: its config, its one gzipped layer and its manifest.
fn platform_image(repo: &str, tag: &str, arch: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (gz, diff_id) = layer(
        "pause",
        format!("#!/bin/sh\n# {repo}:{tag} {arch}\n").as_bytes(),
    );
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Entrypoint": ["/pause"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))
    .unwrap();
    let (cd, ld) = (sha(&config), sha(&gz));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": gz.len() }],
    }))
    .unwrap();
    (config, gz, manifest)
}

/// `registry.k8s.io/<repo>:<tag>` for amd64 as an OCI image-layout archive, laid out as
/// `kbin install` stores a pulled image (index.json naming it for `ctr images import`), and
/// its manifest's digest.
#[allow(dead_code)]
pub fn oci_archive(repo: &str, tag: &str) -> (Vec<u8>, String) {
    let (config, gz, manifest) = platform_image(repo, tag, "amd64");
    let md = sha(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": format!("registry.k8s.io/{repo}:{tag}"),
                "org.opencontainers.image.ref.name": tag,
            },
            "platform": { "os": "linux", "architecture": "amd64" },
        }],
    }))
    .unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    append(
        &mut tar,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    append(&mut tar, "index.json", 0o644, &index);
    for b in [&config, &gz, &manifest] {
        append(
            &mut tar,
            &format!("blobs/sha256/{}", &sha(b)[7..]),
            0o644,
            b,
        );
    }
    (tar.into_inner().unwrap(), md)
}

/// Publish `registry.k8s.io/<repo>:<tag>` for amd64 and arm64 on `server` (served as the
/// registry's mirror: paths `/v2/<repo>/…`).
#[allow(dead_code)]
pub fn publish(server: &Server, repo: &str, tag: &str) -> FakeImage {
    let mut manifests = Vec::new();
    let mut blob_paths = Vec::new();
    let mut index_entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (config, gz, manifest) = platform_image(repo, tag, arch);
        let (cd, ld) = (sha(&config), sha(&gz));
        let md = sha(&manifest);
        for (d, bytes) in [(&cd, config.clone()), (&ld, gz.clone())] {
            let p = format!("/v2/{repo}/blobs/{d}");
            server.put(&p, bytes);
            blob_paths.push(p);
        }
        server.put(&format!("/v2/{repo}/manifests/{md}"), manifest.clone());
        index_entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
            "platform": { "os": "linux", "architecture": arch },
        }));
        manifests.push((md, cd, vec![ld]));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_entries,
    }))
    .unwrap();
    let index_digest = sha(&index);
    server.put(&format!("/v2/{repo}/manifests/{tag}"), index.clone());
    server.put(&format!("/v2/{repo}/manifests/{index_digest}"), index);
    FakeImage {
        name: format!("registry.k8s.io/{repo}:{tag}"),
        index_digest,
        manifests,
        blob_paths,
    }
}

/// Publish a cosign keyless signature of `image` (its index digest) as cosign does: the tag
/// `sha256-<hex>.sig` naming a manifest whose one layer is the simple-signing payload, with the
/// signature, the certificate and the Rekor bundle in its annotations. Signed by `ts` as `how`
/// says, over `payload_digest` when given (a payload naming another image) or this image's.
#[allow(dead_code)]
pub fn publish_signature(
    server: &Server,
    image: &FakeImage,
    ts: &super::sigstore::TestSigstore,
    how: &super::sigstore::Sign,
    names: Option<&str>,
) {
    let repo = image
        .name
        .strip_prefix("registry.k8s.io/")
        .and_then(|r| r.rsplit_once(':'))
        .map(|(r, _)| r.to_owned())
        .expect("registry.k8s.io/<repo>:<tag>");
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": format!("registry.k8s.io/{repo}") },
            "image": { "docker-manifest-digest": names.unwrap_or(&image.index_digest) },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap();
    let pd = sha(&payload);
    server.put(&format!("/v2/{repo}/blobs/{pd}"), payload.clone());
    let s = ts.sign(&payload, how);
    let cosign: serde_json::Value = serde_json::from_str(&s.cosign_bundle).unwrap();
    let mut annotations = serde_json::json!({
        "dev.cosignproject.cosign/signature": s.sig,
        "dev.sigstore.cosign/certificate": s.cert_pem,
    });
    if let Some(rb) = cosign.get("rekorBundle") {
        annotations["dev.sigstore.cosign/bundle"] = serde_json::Value::String(rb.to_string());
    }
    let config = b"{}".to_vec();
    let cd = sha(&config);
    server.put(&format!("/v2/{repo}/blobs/{cd}"), config.clone());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len() },
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": pd,
            "size": payload.len(),
            "annotations": annotations,
        }],
    }))
    .unwrap();
    let hex = image.index_digest.strip_prefix("sha256:").unwrap();
    server.put(&format!("/v2/{repo}/manifests/sha256-{hex}.sig"), manifest);
}
