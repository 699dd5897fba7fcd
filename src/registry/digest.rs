//! SHA-256 digests: parsed from manifests, tags and sidecars, computed while bytes stream.

use std::{fmt, io::Read, path::Path, str::FromStr};

use sha2::{Digest as _, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

/// Text that is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DigestError {
    #[error("the sidecar is empty")]
    EmptySidecar,
    #[error("'{text}' is not a SHA-256 digest (64 hexadecimal digits)")]
    NotHex {
        text: String,
        source: hex::FromHexError,
    },
}

impl Digest {
    pub(crate) fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Hashes a file in 1 MiB reads (blocking; call from a blocking context).
    pub(crate) fn of_file(path: &Path) -> std::io::Result<Digest> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 20];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok(Digest::from(hasher));
            }
            hasher.update(&buffer[..read]);
        }
    }

    /// Reads a `sha256sum`-style sidecar: the first whitespace-separated word is the digest.
    pub(crate) fn from_sidecar(text: &str) -> Result<Digest, DigestError> {
        text.split_whitespace()
            .next()
            .ok_or(DigestError::EmptySidecar)?
            .parse()
    }
}

impl From<[u8; 32]> for Digest {
    fn from(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }
}

impl From<Sha256> for Digest {
    fn from(hasher: Sha256) -> Digest {
        Digest(hasher.finalize().into())
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Digest, DigestError> {
        let text = text.trim();
        let text = text.strip_prefix("sha256:").unwrap_or(text);
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|source| DigestError::NotHex {
            text: text.to_owned(),
            source,
        })?;
        Ok(Digest(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_hex_sidecars_and_prefixed_forms() {
        let digest = Digest::of_bytes(b"");
        assert_eq!(digest.to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>(), Ok(digest));
        assert_eq!(
            format!("sha256:{}", EMPTY.to_uppercase()).parse::<Digest>(),
            Ok(digest)
        );
        assert_eq!(
            Digest::from_sidecar(&format!("{EMPTY}  model.onnx\n")),
            Ok(digest)
        );
        assert!(
            "abc"
                .parse::<Digest>()
                .unwrap_err()
                .to_string()
                .contains("64 hexadecimal digits")
        );
        assert!(Digest::from_sidecar("\n").is_err());
    }

    #[test]
    fn hashes_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        assert_eq!(
            Digest::of_file(&path).unwrap(),
            Digest::of_bytes(&vec![7u8; 3 << 20])
        );
    }
}
