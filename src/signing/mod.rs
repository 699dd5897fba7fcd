//! Model signatures in the format OpenSSF's `model_signing` tool writes: a Sigstore bundle
//! (`model.sig` by default) holding a DSSE envelope over an in-toto statement that lists every
//! file of the model directory with its SHA-256. With a public key, a certificate chain or a
//! Sigstore trust root given, a version directory is loaded only when the signature verifies
//! and its files are exactly the signed ones ([`Policy::verify_dir`]).

mod bundle;
mod chain;
mod keyless;
mod keys;
mod statement;

use std::{collections::BTreeMap, sync::Arc};

use std::path::{Path, PathBuf};

use x509_cert::Certificate;

pub use self::{bundle::BundleError, chain::ChainError, keys::KeyError, statement::StatementError};
use self::{
    bundle::{Bundle, Decoded},
    keyless::Keyless,
    keys::PublicKey,
    statement::Statement,
};
use crate::registry::{Digest, manifest::MANIFEST_FILE};

/// Files pinserve writes into a version directory itself, which no signer can have listed.
const PINSERVE_PREFIX: &str = ".pinserve-";

/// Who must have signed a model version, and where the signature is.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The bundle's path relative to the version directory.
    pub signature_file: String,
    trust: Trust,
}

#[derive(Debug, Clone)]
enum Trust {
    Key(PublicKey),
    Chain {
        roots: Vec<Certificate>,
        identity: Option<String>,
    },
    Keyless(Arc<Keyless>),
}

/// A verified signature: who signed, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The certificate's identity, or `key:sha256:HEX` (the public key's fingerprint).
    pub signer: String,
    /// SHA-256 of the signed in-toto statement.
    pub statement_sha256: Digest,
    /// The statement's subject digest: SHA-256 over every signed file's digest.
    pub model_digest: String,
    /// Each signed file's SHA-256 (which the file was found to have), by `/`-separated path.
    pub files: BTreeMap<String, Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no signature; the model is not signed (or --signature-file names another file)", path.display())]
    MissingSignature { path: PathBuf },
    #[error("{}: malformed signature: {source}", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    /// A well-formed envelope over a statement pinserve cannot check the directory against.
    #[error("{}: malformed signature: {source}", path.display())]
    MalformedStatement {
        path: PathBuf,
        #[source]
        source: StatementError,
    },
    #[error("{}: the signature does not verify with {trusted}", path.display())]
    BadSignature { path: PathBuf, trusted: String },
    #[error("{}: untrusted signer: {source}", path.display())]
    Untrusted {
        path: PathBuf,
        #[source]
        source: ChainError,
    },
    #[error("{}: the keyless signature does not verify: {source}", path.display())]
    Keyless {
        path: PathBuf,
        #[source]
        source: sigstore_verify::Error,
    },
    #[error("verifying the signature stopped: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error("{}: unusable Sigstore trust root: {source}", path.display())]
    TrustRoot {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{}: sha256 {found} does not match the signed {expected}; the file was changed after signing", file.display())]
    Changed {
        file: PathBuf,
        expected: Digest,
        found: Digest,
    },
    #[error("{}: not in the signed statement (a file added after signing)", file.display())]
    Unsigned { file: PathBuf },
    #[error("{}: signed but missing", file.display())]
    MissingFile { file: PathBuf },
}

impl Policy {
    /// Trusts the PEM public key at `path`.
    pub fn with_key(signature_file: String, path: &Path) -> Result<Policy, SigningError> {
        let pem = read(path)?;
        let key = PublicKey::from_pem(&String::from_utf8_lossy(&pem)).map_err(key_error(path))?;
        Ok(Policy {
            signature_file,
            trust: Trust::Key(key),
        })
    }

    /// Trusts the PEM certificates at `path` as issuers, and only `identity` when given.
    pub fn with_chain(
        signature_file: String,
        path: &Path,
        identity: Option<String>,
    ) -> Result<Policy, SigningError> {
        let roots = chain::trusted(&read(path)?).map_err(key_error(path))?;
        Ok(Policy {
            signature_file,
            trust: Trust::Chain { roots, identity },
        })
    }

    /// Trusts keyless signatures of `identity`, logged in at `issuer`, as the Sigstore trust
    /// root at `path` vouches for them.
    pub fn with_trust_root(
        signature_file: String,
        path: &Path,
        identity: &str,
        issuer: &str,
    ) -> Result<Policy, SigningError> {
        let keyless = Keyless::from_file(path, identity, issuer)?;
        Ok(Policy {
            signature_file,
            trust: Trust::Keyless(Arc::new(keyless)),
        })
    }

    /// Verifies the signature in `dir` and that `dir` holds exactly the signed files (less
    /// the signature, pinserve's own files and what the signer chose to ignore). Blocks while
    /// it hashes every file.
    pub fn verify_dir(&self, dir: &Path) -> Result<Signed, SigningError> {
        self.verify_dir_knowing(dir, &BTreeMap::new())
    }

    /// [`Policy::verify_dir`], taking the digests `known` (by `/`-separated path) as the files'
    /// own: a fetch has just computed them, or a manifest's were just checked, so the files are
    /// hashed once, not twice.
    pub(crate) fn verify_dir_knowing(
        &self,
        dir: &Path,
        known: &BTreeMap<String, Digest>,
    ) -> Result<Signed, SigningError> {
        let path = dir.join(&self.signature_file);
        let text = read_signature(&path)?;
        let bundle = Bundle::parse(&text).map_err(malformed(&path))?;
        let decoded = bundle.decoded().map_err(malformed(&path))?;
        let statement =
            |payload: &[u8]| Statement::parse(payload).map_err(malformed_statement(&path));
        // A key or certificate signature is checked before its payload is read; a keyless one
        // is checked against the statement's subject, so the statement is read first.
        let (signer, statement) = match &self.trust {
            Trust::Key(key) => {
                signed_by(key, &decoded, "--signature-public-key", &path)?;
                let signer = format!("key:{}", key.fingerprint());
                (signer, statement(&decoded.payload)?)
            }
            Trust::Chain { roots, identity } => {
                let (key, name) = certified_key(&bundle, roots, identity.as_deref(), &path)?;
                signed_by(&key, &decoded, "the signing certificate's key", &path)?;
                (name, statement(&decoded.payload)?)
            }
            Trust::Keyless(keyless) => {
                let statement = statement(&decoded.payload)?;
                let signer = keyless.verify(&text, statement.model_sha256, &path)?;
                (signer, statement)
            }
        };
        let files = statement.check_dir(dir, |name| self.is_not_model(name), known)?;
        Ok(Signed {
            signer,
            statement_sha256: Digest::of_bytes(&decoded.payload),
            model_digest: hex::encode(statement.model_sha256),
            files,
        })
    }

    /// The signature itself, `pinserve.json` and pinserve's temporaries.
    fn is_not_model(&self, name: &str) -> bool {
        name == self.signature_file
            || name == MANIFEST_FILE
            || name
                .rsplit('/')
                .next()
                .is_some_and(|base| base.starts_with(PINSERVE_PREFIX))
    }
}

/// The bundle at `path`; a missing one is named as such.
fn read_signature(path: &Path) -> Result<Vec<u8>, SigningError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SigningError::MissingSignature {
            path: path.to_path_buf(),
        },
        _ => SigningError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The envelope's signature must verify with `key` (which came from `trusted`).
fn signed_by(
    key: &PublicKey,
    decoded: &Decoded,
    trusted: &str,
    path: &Path,
) -> Result<(), SigningError> {
    key.verify(&bundle::pae(&decoded.payload), &decoded.signature)
        .then_some(())
        .ok_or_else(|| SigningError::BadSignature {
            path: path.to_path_buf(),
            trusted: trusted.to_owned(),
        })
}

/// The key of the bundle's signing certificate, and the identity it names, once the
/// certificate chains to one of `roots` (and names `identity`, when given).
fn certified_key(
    bundle: &Bundle,
    roots: &[Certificate],
    identity: Option<&str>,
    path: &Path,
) -> Result<(PublicKey, String), SigningError> {
    let certificates = bundle.certificates().map_err(malformed(path))?;
    chain::verify(&certificates, roots, identity).map_err(|source| SigningError::Untrusted {
        path: path.to_path_buf(),
        source,
    })
}

fn key_error(path: &Path) -> impl FnOnce(KeyError) -> SigningError + '_ {
    move |source| SigningError::Key {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path) -> impl FnOnce(BundleError) -> SigningError + '_ {
    move |source| SigningError::Malformed {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed_statement(path: &Path) -> impl FnOnce(StatementError) -> SigningError + '_ {
    move |source| SigningError::MalformedStatement {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SigningError> {
    std::fs::read(path).map_err(|source| SigningError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use spki::{EncodePublicKey, der::pem::LineEnding};

    use super::*;
    use crate::registry::redact::error_chain;

    /// A policy trusting a fixed P-256 key, whose PEM file is written into `dir`: which key it
    /// is does not matter to a bundle refused before its signature is looked at.
    fn key_policy(dir: &Path) -> Policy {
        let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let path = dir.join("signer.pub");
        std::fs::write(&path, pem).unwrap();
        Policy::with_key("model.sig".to_owned(), &path).unwrap()
    }

    /// serde_json's own error stays the cause, and the log line names its reason once.
    #[test]
    fn a_bundle_that_is_not_json_keeps_serde_json_s_reason_as_its_cause() {
        let keys = tempfile::tempdir().unwrap();
        let version = tempfile::tempdir().unwrap();
        std::fs::write(version.path().join("model.sig"), "not json").unwrap();
        let err = key_policy(keys.path())
            .verify_dir(version.path())
            .unwrap_err();
        let cause = err
            .source()
            .and_then(|bundle| bundle.source())
            .and_then(|json| json.downcast_ref::<serde_json::Error>());
        assert!(cause.is_some(), "{err:?}");
        let reason = serde_json::from_str::<serde_json::Value>("not json")
            .unwrap_err()
            .to_string();
        let chain = error_chain(&err);
        assert!(
            chain.contains("model.sig: malformed signature: the bundle: "),
            "{chain}"
        );
        assert_eq!(chain.matches(&reason).count(), 1, "{chain}");
    }

    /// A trusted-certificates file that is not PEM keeps der's error as the cause, under the
    /// file's path.
    #[test]
    fn a_certificate_file_that_is_not_pem_keeps_der_s_error_as_its_cause() {
        let keys = tempfile::tempdir().unwrap();
        let path = keys.path().join("ca.pem");
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
        let err = Policy::with_chain("model.sig".to_owned(), &path, None).unwrap_err();
        assert!(
            matches!(&err, SigningError::Key { path: shown, source: KeyError::Certificates(_) } if *shown == path),
            "{err:?}"
        );
        let cause = err.source().and_then(|key| key.source());
        assert!(cause.is_some_and(|der| der.is::<der::Error>()), "{err:?}");
        let chain = error_chain(&err);
        assert!(chain.contains("ca.pem: not PEM certificates: "), "{chain}");
    }
}
