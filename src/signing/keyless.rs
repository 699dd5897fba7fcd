//! Sigstore's keyless signatures: a short-lived Fulcio certificate for an OIDC identity, made
//! durable by the Rekor transparency log. What proves them is a trust root (Fulcio's CAs,
//! Rekor's and the CT logs' keys, timestamp authorities), read from a file so that verification
//! never goes online. `sigstore-verify` checks the certificate chain at the log's time, the
//! embedded SCT, the Rekor entry (inclusion proof with its signed checkpoint, or the signed
//! entry timestamp), any RFC 3161 timestamps, the identity and issuer, and the DSSE signature.

use std::path::Path;

use sigstore_verify::{
    VerificationPolicy, Verifier,
    trust_root::TrustedRoot,
    types::{Bundle, Sha256Hash},
};

use super::{SigningError, bundle::BundleError, malformed};

/// A trust root and the one signer it may vouch for.
pub(crate) struct Keyless {
    verifier: Verifier,
    policy: VerificationPolicy,
}

impl std::fmt::Debug for Keyless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyless")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Keyless {
    /// Reads the trust root (Sigstore's `trusted_root.json` format) at `path`; only
    /// certificates for `identity` issued on a login at `issuer` are accepted.
    pub(crate) fn from_file(
        path: &Path,
        identity: &str,
        issuer: &str,
    ) -> Result<Keyless, SigningError> {
        let refused = |source: Box<dyn std::error::Error + Send + Sync>| SigningError::TrustRoot {
            path: path.to_path_buf(),
            source,
        };
        let root = TrustedRoot::from_file(path).map_err(|err| refused(err.into()))?;
        let verifier = Verifier::new(&root).map_err(|err| refused(err.into()))?;
        Ok(Keyless {
            verifier,
            policy: VerificationPolicy::new(identity, issuer),
        })
    }

    /// Verifies the bundle `text` (at `path`) as a keyless signature over a statement whose
    /// subject digest is `subject_sha256`; the signer's identity when it holds.
    pub(crate) fn verify(
        &self,
        text: &[u8],
        subject_sha256: [u8; 32],
        path: &Path,
    ) -> Result<String, SigningError> {
        let json =
            std::str::from_utf8(text).map_err(|err| malformed(path)(BundleError::NotUtf8(err)))?;
        let bundle =
            Bundle::from_json(json).map_err(|err| malformed(path)(BundleError::Sigstore(err)))?;
        let verified = self
            .verifier
            .verify(Sha256Hash::new(subject_sha256), &bundle, &self.policy)
            .map_err(|source| SigningError::Keyless {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(verified
            .identity()
            .map_or_else(String::new, |identity| identity.as_str().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sigstore_verify::trust_root::{
        SIGSTORE_PRODUCTION_TRUSTED_ROOT, SIGSTORE_STAGING_TRUSTED_ROOT,
    };

    use crate::signing::{Policy, SigningError};

    const IDENTITY: &str = "stefanb@us.ibm.com";
    const ISSUER: &str = "https://sigstore.verify.ibm.com/oauth2";

    /// A copy of the directory `model_signing` signed on Sigstore's public instance
    /// (tests/data/sigstore-keyless/README.md), which a test may change.
    fn signed_copy() -> tempfile::TempDir {
        let from =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigstore-keyless/signed");
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        copy
    }

    fn policy(root_json: &str, identity: &str, issuer: &str) -> Policy {
        let root = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(root.path(), root_json).unwrap();
        Policy::with_trust_root("model.sig".to_owned(), root.path(), identity, issuer).unwrap()
    }

    fn production(identity: &str, issuer: &str) -> Policy {
        policy(SIGSTORE_PRODUCTION_TRUSTED_ROOT, identity, issuer)
    }

    #[test]
    fn verifies_a_keyless_signature_offline_against_the_trust_root() {
        let dir = signed_copy();
        let signed = production(IDENTITY, ISSUER).verify_dir(dir.path()).unwrap();
        assert_eq!(signed.signer, IDENTITY);
        assert_eq!(signed.files.len(), 2);
        assert_eq!(
            signed.model_digest,
            "61d4849d9d90076d6215f4d525f13d6574af8e3f67aef3e6f36fc40a14fdd226"
        );
    }

    #[test]
    fn another_identity_or_issuer_is_refused() {
        let dir = signed_copy();
        for (identity, issuer, named) in [
            ("trainer@example.com", ISSUER, "identity"),
            (
                IDENTITY,
                "https://token.actions.githubusercontent.com",
                "issuer",
            ),
        ] {
            let err = production(identity, issuer)
                .verify_dir(dir.path())
                .unwrap_err();
            assert!(matches!(err, SigningError::Keyless { .. }), "{err}");
            let message = err.to_string();
            assert!(
                message.contains(named) && message.contains("model.sig"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_trust_root_without_the_fulcio_ca_and_rekor_key_is_refused() {
        let dir = signed_copy();
        let err = policy(SIGSTORE_STAGING_TRUSTED_ROOT, IDENTITY, ISSUER)
            .verify_dir(dir.path())
            .unwrap_err();
        assert!(matches!(err, SigningError::Keyless { .. }), "{err}");
    }

    /// Why the signer's own policy refuses the signed directory once `change` has been made
    /// to a copy of it.
    fn refusal(change: impl FnOnce(&std::path::Path)) -> SigningError {
        let dir = signed_copy();
        change(dir.path());
        production(IDENTITY, ISSUER)
            .verify_dir(dir.path())
            .unwrap_err()
    }

    #[test]
    fn changed_extra_and_missing_files_are_named() {
        let err = refusal(|dir| std::fs::write(dir.join("signme-1"), "changed").unwrap());
        assert!(
            matches!(err, SigningError::Changed { ref file, .. } if file.ends_with("signme-1")),
            "{err}"
        );
        let err = refusal(|dir| std::fs::write(dir.join("extra.onnx"), "added").unwrap());
        assert!(
            matches!(err, SigningError::Unsigned { ref file } if file.ends_with("extra.onnx")),
            "{err}"
        );
        let err = refusal(|dir| std::fs::remove_file(dir.join("signme-2")).unwrap());
        assert!(
            matches!(err, SigningError::MissingFile { ref file } if file.ends_with("signme-2")),
            "{err}"
        );
    }

    #[test]
    fn a_tampered_log_entry_or_signature_is_refused() {
        let entry = "/verificationMaterial/tlogEntries/0";
        let edits = [
            (format!("{entry}/integratedTime"), "1760062399"),
            (
                format!("{entry}/inclusionProof/hashes/0"),
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            (
                "/dsseEnvelope/signatures/0/sig".to_owned(),
                "MEUCIBjOA8VWIbY+YMdukGU1P0MHoCVjbibYKRvKp+ddAr4FAiEAtRi0049nhfNTX6r4sxpPJYmnmcMeI1ylYD/ak8qK1yk=",
            ),
        ];
        for (pointer, value) in edits {
            let err = refusal(|dir| {
                let path = dir.join("model.sig");
                let mut bundle: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                *bundle.pointer_mut(&pointer).unwrap() = value.into();
                std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
            });
            assert!(
                matches!(err, SigningError::Keyless { .. }),
                "{pointer}: {err}"
            );
        }
    }

    #[test]
    fn an_unreadable_trust_root_is_refused_by_path() {
        let root = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(root.path(), "{\"mediaType\": 1}").unwrap();
        let err = Policy::with_trust_root("model.sig".to_owned(), root.path(), IDENTITY, ISSUER)
            .unwrap_err();
        assert!(matches!(err, SigningError::TrustRoot { .. }), "{err}");
        assert!(err.to_string().contains(&root.path().display().to_string()));
    }
}
