//! The fetch stage's last check: with a signing policy, a version directory is verified
//! against its signature (OpenSSF model signing) before a manifest vouches for it, whenever an
//! earlier download is reused, and whenever files are loaded in place. Digests the stage has
//! just computed or checked are handed over, so no file is hashed twice.

use std::{collections::BTreeMap, path::Path};

use super::{Digest, manifest::Manifest};
use crate::signing::{Policy, Signed, SigningError};

/// Verifies `dir` against `policy` (nothing to do without one), logging the signer. Blocks
/// while it hashes the files whose digests are not `known`.
pub(crate) fn verify(
    policy: Option<&Policy>,
    dir: &Path,
    known: &BTreeMap<String, Digest>,
) -> Result<Option<Signed>, SigningError> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    let signed = policy.verify_dir_knowing(dir, known)?;
    tracing::info!(
        dir = %dir.display(),
        signer = %signed.signer,
        statement_sha256 = %signed.statement_sha256,
        model_digest = %signed.model_digest,
        files = signed.files.len(),
        "model signature verified"
    );
    Ok(Some(signed))
}

/// [`verify`] off the async runtime.
pub(crate) async fn verify_off_runtime(
    policy: Option<&Policy>,
    dir: &Path,
    known: BTreeMap<String, Digest>,
) -> Result<Option<Signed>, SigningError> {
    let Some(policy) = policy.cloned() else {
        return Ok(None);
    };
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || verify(Some(&policy), &dir, &known)).await?
}

/// The digests `manifest` records, by path: the files' own once the manifest was written by
/// this fetch or has just been checked by hashing.
pub(crate) fn known_digests(manifest: &Manifest) -> BTreeMap<String, Digest> {
    manifest
        .files
        .iter()
        .map(|file| (file.path.to_string(), file.sha256))
        .collect()
}
