//! Small value types with their parsers: [`Arch`], [`Digest`], [`Minor`].

use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that did not parse; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A CPU architecture kbin installs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
}

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The architecture kbin runs on, if it is one it supports.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The name upstream uses in file names (`amd64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            _ => Err(ParseError(format!(
                "unknown architecture {s:?}: use amd64 or arm64"
            ))),
        }
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DigestAlgo {
    /// SHA-256 (64 hex characters).
    Sha256,
    /// SHA-512 (128 hex characters).
    Sha512,
}

impl DigestAlgo {
    /// The prefix used in `algo:hex` (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgo::Sha256 => "sha256",
            DigestAlgo::Sha512 => "sha512",
        }
    }

    /// The length of its hex form.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgo::Sha256 => 64,
            DigestAlgo::Sha512 => 128,
        }
    }
}

/// A content digest, written `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    algo: DigestAlgo,
    hex: String,
}

impl Digest {
    /// A digest from its algorithm and lowercase hex, checked.
    pub fn new(algo: DigestAlgo, hex: &str) -> Result<Self, ParseError> {
        if hex.len() != algo.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseError(format!(
                "{} digest {hex:?} is not {} lowercase hex characters",
                algo.as_str(),
                algo.hex_len()
            )));
        }
        Ok(Digest {
            algo,
            hex: hex.to_owned(),
        })
    }

    /// A sha256 digest from raw bytes.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest {
            algo: DigestAlgo::Sha256,
            hex: hex::encode(bytes),
        }
    }

    /// A sha512 digest from raw bytes.
    pub fn sha512_of(bytes: &[u8]) -> Self {
        Digest {
            algo: DigestAlgo::Sha512,
            hex: hex::encode(bytes),
        }
    }

    /// The algorithm.
    pub fn algo(&self) -> DigestAlgo {
        self.algo
    }

    /// The lowercase hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algo, hex) = s.split_once(':').ok_or_else(|| {
            ParseError(format!(
                "digest {s:?} is not \"sha256:<hex>\" or \"sha512:<hex>\""
            ))
        })?;
        let algo = match algo {
            "sha256" => DigestAlgo::Sha256,
            "sha512" => DigestAlgo::Sha512,
            _ => {
                return Err(ParseError(format!(
                    "digest {s:?} uses {algo:?}: only sha256 and sha512 are supported"
                )));
            }
        };
        Digest::new(algo, hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A Kubernetes minor release line, `1.30`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor {
    /// The major version (1).
    pub major: u64,
    /// The minor version.
    pub minor: u64,
}

impl Minor {
    /// The minor of a version.
    pub fn of(v: &Version) -> Minor {
        Minor {
            major: v.major,
            minor: v.minor,
        }
    }

    /// `self - other` in minors (same major assumed; different majors count as far apart).
    pub fn distance(self, other: Minor) -> i64 {
        if self.major != other.major {
            return if self.major > other.major {
                1000
            } else {
                -1000
            };
        }
        self.minor as i64 - other.minor as i64
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Minor {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.strip_prefix('v').unwrap_or(s);
        let bad = || ParseError(format!("{s:?} is not a minor version like 1.30"));
        let (a, b) = t.split_once('.').ok_or_else(bad)?;
        let num = |x: &str| {
            if x.is_empty()
                || !x.bytes().all(|c| c.is_ascii_digit())
                || (x.len() > 1 && x.starts_with('0'))
            {
                Err(bad())
            } else {
                x.parse::<u64>().map_err(|_| bad())
            }
        };
        Ok(Minor {
            major: num(a)?,
            minor: num(b)?,
        })
    }
}

impl Serialize for Minor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_bad_hex() {
        let hex = "a".repeat(64);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        assert!(format!("sha512:{hex}").parse::<Digest>().is_err());
        assert!(format!("md5:{hex}").parse::<Digest>().is_err());
        assert!(hex.parse::<Digest>().is_err());
    }

    #[test]
    fn minor_parses_only_major_dot_minor() {
        assert_eq!(
            "1.30".parse::<Minor>().unwrap(),
            Minor {
                major: 1,
                minor: 30
            }
        );
        assert_eq!("v1.30".parse::<Minor>().unwrap().to_string(), "1.30");
        for bad in ["1", "1.30.1", "1.x", "", ".30", "1.030"] {
            assert!(bad.parse::<Minor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn arch_parses_upstream_and_rust_names() {
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert!("riscv64".parse::<Arch>().is_err());
    }
}
