//! A Rekor v2 entry's proof that the log holds it: an RFC 6962 inclusion proof from the entry to
//! a tree root, and the log's signed checkpoint (a signed note, transparency-dev's format) naming
//! that root and size. A Rekor v1 entry proves the same with its signed entry timestamp instead.

use base64::Engine as _;

use super::SigError;

/// An entry's inclusion proof (RFC 6962) and the signed checkpoint whose root it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's index in the tree the proof is about.
    pub log_index: u64,
    /// That tree's size.
    pub tree_size: u64,
    /// Its root hash.
    pub root_hash: Vec<u8>,
    /// The sibling hashes, leaf to root.
    pub hashes: Vec<Vec<u8>>,
    /// The log's signed note naming that tree (`origin`, size, root hash, signature lines).
    pub checkpoint: String,
}

fn bad(what: impl Into<String>) -> SigError {
    SigError::BadInclusion(what.into())
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    c.finish().as_ref().to_vec()
}

/// The root hash `proof` reaches from the leaf `body` (RFC 6962 §2.1.1, as transparency-dev's
/// `proof.RootFromInclusionProof` computes it), or why it cannot.
fn root_from(body: &[u8], proof: &InclusionProof) -> Result<Vec<u8>, SigError> {
    let (index, size) = (proof.log_index, proof.tree_size);
    if index >= size {
        return Err(bad(format!("index {index} is outside a tree of {size}")));
    }
    // The bottom part of the path: where the paths to `index` and to the last leaf diverge.
    let inner = (u64::BITS - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    if proof.hashes.len() != inner + border {
        return Err(bad(format!(
            "it has {} hashes where a tree of {size} needs {}",
            proof.hashes.len(),
            inner + border
        )));
    }
    let mut h = sha256(&[&[0], body]);
    for (i, sibling) in proof.hashes[..inner].iter().enumerate() {
        h = if (index >> i) & 1 == 0 {
            sha256(&[&[1], &h, sibling])
        } else {
            sha256(&[&[1], sibling, &h])
        };
    }
    for sibling in &proof.hashes[inner..] {
        h = sha256(&[&[1], sibling, &h]);
    }
    Ok(h)
}

/// Verify the note's signature by the log key `verify` checks, the key named by `key_id`'s
/// first four bytes (its key hint): the note's text (origin, size, root hash).
fn checkpoint<'a>(
    note: &'a str,
    key_id: &[u8],
    verify: &dyn Fn(&[u8], &[u8]) -> bool,
) -> Result<(&'a str, u64, Vec<u8>), SigError> {
    let Some((text, sigs)) = note.split_once("\n\n") else {
        return Err(bad(
            "the checkpoint has no blank line before its signatures",
        ));
    };
    // What is signed: the text up to and with its last newline.
    let signed = &note[..text.len() + 1];
    let hint = key_id
        .get(..4)
        .ok_or_else(|| bad("the log id is too short"))?;
    let mut found = false;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((_, sig)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            continue;
        };
        if sig.len() > 4 && &sig[..4] == hint {
            found = true;
            if verify(signed.as_bytes(), &sig[4..]) {
                let mut lines = text.lines();
                let origin = lines.next().unwrap_or_default();
                let size = lines
                    .next()
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| bad("the checkpoint's tree size is not a number"))?;
                let root = lines
                    .next()
                    .and_then(|l| base64::engine::general_purpose::STANDARD.decode(l).ok())
                    .ok_or_else(|| bad("the checkpoint's root hash is not base64"))?;
                return Ok((origin, size, root));
            }
        }
    }
    Err(bad(if found {
        "the checkpoint's signature does not verify under the log's key"
    } else {
        "the checkpoint is not signed by the log the entry names"
    }))
}

/// The entry with `body` (base64, as the bundle has it) is in the log whose key `verify` checks
/// and whose id is `key_id`, by `proof`: the checkpoint is signed by it, and the proof reaches
/// the checkpoint's root from the body.
pub fn verify(
    body: &str,
    proof: &InclusionProof,
    key_id: &[u8],
    verify: &dyn Fn(&[u8], &[u8]) -> bool,
) -> Result<(), SigError> {
    let (origin, size, root) = checkpoint(&proof.checkpoint, key_id, verify)?;
    if size != proof.tree_size || root != proof.root_hash {
        return Err(bad(format!(
            "the proof is about a tree of {} that the checkpoint of {origin} does not name",
            proof.tree_size
        )));
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| bad("the entry's body is not base64"))?;
    if root_from(&body, proof)? != proof.root_hash {
        return Err(bad(
            "it does not lead from the entry to the checkpoint's root",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of `n` leaves, each leaf's body its index, and the inclusion proof of `index`.
    fn tree(n: u64, index: u64) -> (Vec<u8>, InclusionProof) {
        fn root(leaves: &[Vec<u8>]) -> Vec<u8> {
            if leaves.len() == 1 {
                return leaves[0].clone();
            }
            let k = leaves.len().next_power_of_two() / 2;
            sha256(&[&[1], &root(&leaves[..k]), &root(&leaves[k..])])
        }
        fn path(leaves: &[Vec<u8>], i: usize) -> Vec<Vec<u8>> {
            if leaves.len() == 1 {
                return Vec::new();
            }
            let k = leaves.len().next_power_of_two() / 2;
            if i < k {
                let mut p = path(&leaves[..k], i);
                p.push(root(&leaves[k..]));
                p
            } else {
                let mut p = path(&leaves[k..], i - k);
                p.push(root(&leaves[..k]));
                p
            }
        }
        let leaves: Vec<Vec<u8>> = (0..n).map(|i| sha256(&[&[0], &i.to_be_bytes()])).collect();
        (
            index.to_be_bytes().to_vec(),
            InclusionProof {
                log_index: index,
                tree_size: n,
                root_hash: root(&leaves),
                hashes: path(&leaves, index as usize),
                checkpoint: String::new(),
            },
        )
    }

    #[test]
    fn every_leaf_of_trees_of_every_shape_reaches_the_root_and_nothing_else_does() {
        for n in 1..=17 {
            for i in 0..n {
                let (body, p) = tree(n, i);
                assert_eq!(root_from(&body, &p).unwrap(), p.root_hash, "{n} {i}");
                let mut other = p.clone();
                if let Some(h) = other.hashes.first_mut() {
                    h[0] ^= 1;
                    assert_ne!(root_from(&body, &other).unwrap(), p.root_hash);
                }
                assert_ne!(root_from(b"another body", &p).unwrap(), p.root_hash);
            }
        }
        let (body, mut p) = tree(5, 2);
        p.hashes.pop();
        assert!(root_from(&body, &p).is_err());
        p.log_index = 5;
        assert!(root_from(&body, &p).is_err());
    }
}
