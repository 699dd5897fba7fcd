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

use super::{SigningError, keys::PublicKey};

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// Reads the trusted certificates of a PEM file.
pub(crate) fn trusted(pem: &[u8], what: &str) -> Result<Vec<Certificate>, SigningError> {
    let certificates = Certificate::load_pem_chain(pem).map_err(|err| SigningError::Key {
        what: what.to_owned(),
        reason: format!("not PEM certificates: {err}"),
    })?;
    if certificates.is_empty() {
        return Err(SigningError::Key {
            what: what.to_owned(),
            reason: "holds no certificate".to_owned(),
        });
    }
    Ok(certificates)
}

/// The signing certificate's key, once the chain, key usage and identity check out, and the
/// identity it names.
pub(crate) fn verify(
    bundled: &[Vec<u8>],
    roots: &[Certificate],
    identity: Option<&str>,
) -> Result<(PublicKey, String), String> {
    let certificates = bundled
        .iter()
        .map(|der| {
            Certificate::from_der(der).map_err(|err| format!("a bundled certificate: {err}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some((leaf, intermediates)) = certificates.split_first() else {
        return Err("no certificate in the bundle (was it signed with a key?)".to_owned());
    };
    let at = leaf.tbs_certificate().validity().not_before;
    chain_to_root(leaf, intermediates, roots, at)?;
    check_usage(leaf)?;
    let names = identities(leaf)?;
    if let Some(expected) = identity
        && !names.iter().any(|name| name == expected)
    {
        return Err(format!(
            "the certificate names {} and not the expected --signature-identity '{expected}'",
            names.join(", ")
        ));
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
) -> Result<(), String> {
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
        let next = unused.iter().position(issued_by).ok_or_else(|| {
            format!(
                "the certificate for '{}' was not issued by a certificate of --signature-certificate-chain",
                current.tbs_certificate().subject()
            )
        })?;
        current = unused.swap_remove(next);
    }
}

fn within_validity(certificate: &Certificate, at: Time) -> Result<(), String> {
    let validity = certificate.tbs_certificate().validity();
    let at = at.to_unix_duration();
    if validity.not_before.to_unix_duration() <= at && at <= validity.not_after.to_unix_duration() {
        Ok(())
    } else {
        Err(format!(
            "the certificate for '{}' was not valid when the signing certificate was issued",
            certificate.tbs_certificate().subject()
        ))
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
fn check_usage(leaf: &Certificate) -> Result<(), String> {
    let tbs = leaf.tbs_certificate();
    let signs = matches!(tbs.get_extension::<KeyUsage>(), Ok(Some((_, usage))) if usage.digital_signature());
    let code = matches!(tbs.get_extension::<ExtendedKeyUsage>(), Ok(Some((_, usage))) if usage.0.contains(&CODE_SIGNING));
    if signs || code {
        Ok(())
    } else {
        Err("the signing certificate may not be used for signing (no digitalSignature key usage nor codeSigning extended key usage)".to_owned())
    }
}

/// The signer's names: the subject alternative names (e-mail, URI, DNS), else the subject.
fn identities(leaf: &Certificate) -> Result<Vec<String>, String> {
    let tbs = leaf.tbs_certificate();
    let alternatives = tbs
        .get_extension::<SubjectAltName>()
        .map_err(|err| format!("the signing certificate's subject alternative names: {err}"))?;
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

fn key_of(certificate: &Certificate) -> Result<PublicKey, String> {
    let info = certificate.tbs_certificate().subject_public_key_info();
    let der = info.to_der().map_err(|err| err.to_string())?;
    PublicKey::from_spki(&der, "the certificate's key").map_err(|err| err.to_string())
}
