//! The public keys `model_signing` signs with: ECDSA on P-256, P-384 and P-521, each hashing
//! with the SHA-2 of its own size (as the tool does, for keys and certificates alike).

use ecdsa::signature::{Verifier, hazmat::PrehashVerifier};
use sha2::{Digest as _, Sha256};
use spki::{DecodePublicKey, EncodePublicKey, SubjectPublicKeyInfoRef};

const P256: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Why a key or a certificate file cannot be trusted as given.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not PEM: {0}")]
    Pem(#[source] spki::der::pem::Error),
    #[error("a PEM '{0}', not a 'PUBLIC KEY'")]
    Label(String),
    #[error("not a public key: {0}")]
    Spki(#[source] spki::Error),
    #[error(
        "not an elliptic-curve key (model_signing signs with ECDSA P-256, P-384 or P-521): {0}"
    )]
    NotEllipticCurve(#[source] spki::Error),
    #[error("unsupported curve {0} (P-256, P-384 and P-521 are)")]
    Curve(spki::ObjectIdentifier),
    #[error("invalid key: {0}")]
    Invalid(#[source] spki::Error),
    #[error("not PEM certificates: {0}")]
    Certificates(#[source] der::Error),
    #[error("holds no certificate")]
    NoCertificate,
}

#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(Box<p521::ecdsa::VerifyingKey>),
}

impl PublicKey {
    /// A key from its DER `SubjectPublicKeyInfo`.
    pub(crate) fn from_spki(der: &[u8]) -> Result<PublicKey, KeyError> {
        let info = SubjectPublicKeyInfoRef::try_from(der).map_err(KeyError::Spki)?;
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(KeyError::NotEllipticCurve)?;
        Ok(match curve {
            P256 => PublicKey::P256(
                p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(KeyError::Invalid)?,
            ),
            P384 => PublicKey::P384(
                p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(KeyError::Invalid)?,
            ),
            P521 => PublicKey::P521(Box::new(
                p521::ecdsa::VerifyingKey::from_public_key_der(der).map_err(KeyError::Invalid)?,
            )),
            other => return Err(KeyError::Curve(other)),
        })
    }

    /// A key from a PEM `PUBLIC KEY` file's contents.
    pub(crate) fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let (label, der) = spki::der::pem::decode_vec(pem.as_bytes()).map_err(KeyError::Pem)?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::Label(label.to_owned()));
        }
        PublicKey::from_spki(&der)
    }

    /// Checks a DER ECDSA signature over `message`, hashed with the curve's SHA-2.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::P256(key) => p256::ecdsa::DerSignature::try_from(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::DerSignature::try_from(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            PublicKey::P521(key) => p521::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
        }
    }

    /// Checks a DER ECDSA signature over a digest computed by the caller (a certificate's
    /// signature algorithm names the hash, whatever the issuer's curve).
    pub(crate) fn verify_prehash(&self, prehash: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::P256(key) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(prehash, &sig).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(prehash, &sig).is_ok()),
            PublicKey::P521(key) => p521::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(prehash, &sig).is_ok()),
        }
    }

    /// `sha256:HEX` of the key's DER `SubjectPublicKeyInfo`: how the signer is named when a
    /// bare key (no certificate) vouches for the model.
    pub(crate) fn fingerprint(&self) -> String {
        let der = match self {
            PublicKey::P256(key) => key.to_public_key_der(),
            PublicKey::P384(key) => key.to_public_key_der(),
            PublicKey::P521(key) => key.to_public_key_der(),
        };
        let der = der.map(|doc| doc.as_bytes().to_vec()).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&der)))
    }
}
