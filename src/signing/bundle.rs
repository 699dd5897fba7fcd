//! The Sigstore bundle `model_signing` writes: a DSSE envelope over an in-toto statement, and
//! the material that names the signer (a public-key hint, or an X.509 certificate chain).

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Deserialize;

/// The only payload type `model_signing` signs.
const IN_TOTO: &str = "application/vnd.in-toto+json";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bundle {
    pub media_type: String,
    pub verification_material: Material,
    pub dsse_envelope: Envelope,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
/// A key-based signature carries only a hint of its key (`publicKey`), which is not read: the
/// key comes from the verifier.
pub(crate) struct Material {
    /// A certificate-based signature: the signing certificate first, then its issuers.
    #[serde(default)]
    pub x509_certificate_chain: Option<CertificateChain>,
    /// Sigstore's keyless signatures carry a single Fulcio certificate.
    #[serde(default)]
    pub certificate: Option<RawCertificate>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CertificateChain {
    pub certificates: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawCertificate {
    pub raw_bytes: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EnvelopeSignature {
    pub sig: String,
}

/// An envelope checked for shape, its parts decoded.
pub(crate) struct Decoded {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a bundle is not one `model_signing` writes, or not one the trust given can check.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the bundle is not UTF-8 text: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// What `sigstore-verify` refuses to read as a bundle (keyless signatures only).
    #[error("the bundle: {0}")]
    Sigstore(#[source] sigstore_verify::types::Error),
    #[error("media type '{0}' is not a Sigstore bundle")]
    MediaType(String),
    #[error("payload type '{0}' is not an in-toto statement")]
    PayloadType(String),
    #[error("{0} signatures in the envelope, expected one")]
    SignatureCount(usize),
    #[error("the {what} is not base64: {source}")]
    Base64 {
        what: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error(
        "a keyless Sigstore signature (one Fulcio certificate): verify it with --sigstore-trust-root"
    )]
    Keyless,
    #[error("no certificate in the bundle (was it signed with a key?)")]
    NoCertificate,
}

impl Bundle {
    pub(crate) fn parse(text: &[u8]) -> Result<Bundle, BundleError> {
        let bundle: Bundle = serde_json::from_slice(text).map_err(BundleError::Json)?;
        if !bundle
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle")
        {
            return Err(BundleError::MediaType(bundle.media_type));
        }
        Ok(bundle)
    }

    /// The payload and its one signature, base64-decoded.
    pub(crate) fn decoded(&self) -> Result<Decoded, BundleError> {
        let envelope = &self.dsse_envelope;
        if envelope.payload_type != IN_TOTO {
            return Err(BundleError::PayloadType(envelope.payload_type.clone()));
        }
        let [signature] = envelope.signatures.as_slice() else {
            return Err(BundleError::SignatureCount(envelope.signatures.len()));
        };
        Ok(Decoded {
            payload: decode(&envelope.payload, "payload")?,
            signature: decode(&signature.sig, "signature")?,
        })
    }

    /// The DER certificates the bundle carries, the signing one first. A single certificate
    /// is Sigstore's keyless form (Fulcio, with a Rekor entry), which a certificate chain
    /// cannot vouch for: a Fulcio certificate lives minutes, and only the transparency log
    /// checked against a trust root makes it worth anything later.
    pub(crate) fn certificates(&self) -> Result<Vec<Vec<u8>>, BundleError> {
        let material = &self.verification_material;
        match (&material.x509_certificate_chain, &material.certificate) {
            (Some(chain), _) if !chain.certificates.is_empty() => chain
                .certificates
                .iter()
                .map(|certificate| decode(&certificate.raw_bytes, "certificate"))
                .collect(),
            (None, Some(_)) => Err(BundleError::Keyless),
            _ => Err(BundleError::NoCertificate),
        }
    }
}

fn decode(text: &str, what: &'static str) -> Result<Vec<u8>, BundleError> {
    STANDARD
        .decode(text)
        .map_err(|source| BundleError::Base64 { what, source })
}

/// DSSE's pre-authentication encoding, which is what the signature covers (DSSE v1.0).
pub(crate) fn pae(payload: &[u8]) -> Vec<u8> {
    let mut encoded = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), payload.len()).into_bytes();
    encoded.extend_from_slice(payload);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_prefixes_type_and_lengths_as_dsse_v1_specifies() {
        assert_eq!(
            pae(b"{}"),
            b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec()
        );
    }

    #[test]
    fn a_keyless_bundle_is_refused_by_name() {
        let text = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []},
            "dsseEnvelope": {"payload": "e30=", "payloadType": IN_TOTO, "signatures": [{"sig": "AAAA"}]}
        });
        let bundle = Bundle::parse(text.to_string().as_bytes()).unwrap();
        let err = bundle.certificates().unwrap_err();
        assert!(err.to_string().contains("keyless"), "{err}");
        assert_eq!(bundle.decoded().unwrap().payload, b"{}");
    }

    #[test]
    fn an_envelope_of_another_type_or_signature_count_is_malformed() {
        let bundle = |payload_type: &str, signatures: serde_json::Value| {
            let text = serde_json::json!({
                "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {"publicKey": {"hint": ""}},
                "dsseEnvelope": {"payload": "e30=", "payloadType": payload_type, "signatures": signatures}
            });
            Bundle::parse(text.to_string().as_bytes()).unwrap()
        };
        let err = bundle("text/plain", serde_json::json!([{"sig": ""}]))
            .decoded()
            .err();
        assert!(err.is_some_and(|err| err.to_string().contains("text/plain")));
        let err = bundle(IN_TOTO, serde_json::json!([])).decoded().err();
        assert!(err.is_some_and(|err| err.to_string().contains("0 signatures")));
    }
}
