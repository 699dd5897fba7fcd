//! Certificate-based signatures: the bundle's signing certificate must chain, through the
//! intermediates the bundle carries, to a certificate of `--signature-certificate-chain`, be
//! usable for signing, and (with `--signature-identity`) name the expected signer. As
//! `model_signing` does, validity is checked at the signing certificate's `notBefore` (the
//! signing time is not otherwise recorded), so a signature outlives its short-lived certificate.

use der::{Decode, Encode, asn1::ObjectIdentifier};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use x509_cert::{
    Certificate,
    ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName, name::GeneralName},
    time::Time,
};

use super::keys::{KeyError, PublicKey};

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// Why the bundle's certificates do not vouch for the signer.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("a bundled certificate: {0}")]
    Der(#[source] der::Error),
    #[error("the bundle's certificate chain is empty")]
    Empty,
    #[error(
        "the certificate for '{subject}' was not issued by a certificate of --signature-certificate-chain"
    )]
    NotIssued { subject: String },
    #[error(
        "the certificate for '{subject}' was not valid when the signing certificate was issued"
    )]
    NotValid { subject: String },
    #[error(
        "the signing certificate may not be used for signing (no digitalSignature key usage nor codeSigning extended key usage)"
    )]
    Usage,
    #[error("the signing certificate's subject alternative names: {0}")]
    AltNames(#[source] der::Error),
    #[error("the certificate names {names} and not the expected --signature-identity '{expected}'")]
    Identity { names: String, expected: String },
    #[error("the signing certificate's key: {0}")]
    Key(#[source] KeyError),
}

/// Reads the trusted certificates of a PEM file.
pub(crate) fn trusted(pem: &[u8]) -> Result<Vec<Certificate>, KeyError> {
    let certificates = Certificate::load_pem_chain(pem).map_err(KeyError::Certificates)?;
    if certificates.is_empty() {
        return Err(KeyError::NoCertificate);
    }
    Ok(certificates)
}

/// The signing certificate's key, once the chain, key usage and identity check out, and the
/// identity it names.
pub(crate) fn verify(
    bundled: &[Vec<u8>],
    roots: &[Certificate],
    identity: Option<&str>,
) -> Result<(PublicKey, String), ChainError> {
    let certificates = bundled
        .iter()
        .map(|der| Certificate::from_der(der).map_err(ChainError::Der))
        .collect::<Result<Vec<_>, _>>()?;
    let Some((leaf, intermediates)) = certificates.split_first() else {
        return Err(ChainError::Empty);
    };
    let at = leaf.tbs_certificate().validity().not_before;
    chain_to_root(leaf, intermediates, roots, at)?;
    check_usage(leaf)?;
    let names = identities(leaf)?;
    if let Some(expected) = identity
        && !names.iter().any(|name| name == expected)
    {
        return Err(ChainError::Identity {
            names: names.join(", "),
            expected: expected.to_owned(),
        });
    }
    let key = key_of(leaf)?;
    Ok((key, names.into_iter().next().unwrap_or_default()))
}

/// Climbs from `leaf` through the bundle's intermediates (each used once, so a chain that
/// loops or ends in an untrusted root stops) until a trusted certificate issued the current one.
fn chain_to_root(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    at: Time,
) -> Result<(), ChainError> {
    let mut unused: Vec<&Certificate> = intermediates.iter().collect();
    let mut current = leaf;
    loop {
        within_validity(current, at)?;
        let issued_by = |issuer: &&Certificate| {
            issuer.tbs_certificate().subject() == current.tbs_certificate().issuer()
                && is_ca(issuer)
                && signed_by(current, issuer)
        };
        if let Some(root) = roots.iter().find(issued_by) {
            return within_validity(root, at);
        }
        let next = unused
            .iter()
            .position(issued_by)
            .ok_or_else(|| ChainError::NotIssued {
                subject: current.tbs_certificate().subject().to_string(),
            })?;
        current = unused.swap_remove(next);
    }
}

fn within_validity(certificate: &Certificate, at: Time) -> Result<(), ChainError> {
    let validity = certificate.tbs_certificate().validity();
    let at = at.to_unix_duration();
    if validity.not_before.to_unix_duration() <= at && at <= validity.not_after.to_unix_duration() {
        Ok(())
    } else {
        Err(ChainError::NotValid {
            subject: certificate.tbs_certificate().subject().to_string(),
        })
    }
}

fn is_ca(certificate: &Certificate) -> bool {
    matches!(
        certificate
            .tbs_certificate()
            .get_extension::<BasicConstraints>(),
        Ok(Some((_, BasicConstraints { ca: true, .. })))
    )
}

/// Whether `issuer`'s key signed `certificate` (ECDSA with SHA-256, -384 or -512).
fn signed_by(certificate: &Certificate, issuer: &Certificate) -> bool {
    let Ok(key) = key_of(issuer) else {
        return false;
    };
    let Ok(tbs) = certificate.tbs_certificate().to_der() else {
        return false;
    };
    let prehash = match certificate.signature_algorithm().oid {
        ECDSA_SHA256 => Sha256::digest(&tbs).to_vec(),
        ECDSA_SHA384 => Sha384::digest(&tbs).to_vec(),
        ECDSA_SHA512 => Sha512::digest(&tbs).to_vec(),
        _ => return false,
    };
    certificate
        .signature()
        .as_bytes()
        .is_some_and(|signature| key.verify_prehash(&prehash, signature))
}

/// As `model_signing` requires: key usage `digitalSignature`, or extended key usage
/// `codeSigning`.
fn check_usage(leaf: &Certificate) -> Result<(), ChainError> {
    let tbs = leaf.tbs_certificate();
    let signs = matches!(tbs.get_extension::<KeyUsage>(), Ok(Some((_, usage))) if usage.digital_signature());
    let code = matches!(tbs.get_extension::<ExtendedKeyUsage>(), Ok(Some((_, usage))) if usage.0.contains(&CODE_SIGNING));
    if signs || code {
        Ok(())
    } else {
        Err(ChainError::Usage)
    }
}

/// The signer's names: the subject alternative names (e-mail, URI, DNS), else the subject.
fn identities(leaf: &Certificate) -> Result<Vec<String>, ChainError> {
    let tbs = leaf.tbs_certificate();
    let alternatives = tbs
        .get_extension::<SubjectAltName>()
        .map_err(ChainError::AltNames)?;
    let mut names: Vec<String> = alternatives
        .map(|(_, names)| names.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::Rfc822Name(text)
            | GeneralName::UniformResourceIdentifier(text)
            | GeneralName::DnsName(text) => Some(text.to_string()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        names.push(tbs.subject().to_string());
    }
    Ok(names)
}

fn key_of(certificate: &Certificate) -> Result<PublicKey, ChainError> {
    let info = certificate.tbs_certificate().subject_public_key_info();
    let der = info
        .to_der()
        .map_err(|err| ChainError::Key(KeyError::Spki(err.into())))?;
    PublicKey::from_spki(&der).map_err(ChainError::Key)
}
