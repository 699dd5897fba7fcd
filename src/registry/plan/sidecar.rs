//! A file's `.sha256` sidecar: the digest a file must have, kept beside it. Probed for beside a
//! single file (local, in a store, on a plain HTTP server), paired with its file in a listing,
//! and read into the plan's expected digests.

use std::path::{Path, PathBuf};

use url::Url;

use super::{
    Plan, Resolver,
    listing::{Found, Remote, http_exists, http_source, last_segment, local_found},
};
use crate::registry::{
    RegistryError,
    digest::Digest,
    redact::redact_url,
    reference::Location,
    relpath::RelativePath,
    retry::with_retries,
    source::{FileSource, TransferError, within},
    store::Store,
};

const SIDECAR_SUFFIX: &str = ".sha256";

impl Resolver {
    /// Reads each sidecar and makes its digest the one its file must have.
    pub(super) async fn expect_sidecar_digests(
        &self,
        plan: &mut Plan,
        sidecars: Vec<(RelativePath, Found)>,
        location: &Location,
    ) -> Result<(), RegistryError> {
        for (target, sidecar) in sidecars {
            let text = self.read_small(&sidecar.source).await.map_err(|source| {
                RegistryError::Transfer {
                    location: location.to_string(),
                    source,
                }
            })?;
            let digest = Digest::from_sidecar(&text).map_err(|source| RegistryError::Sidecar {
                location: sidecar.source.to_string(),
                source,
            })?;
            plan.expect_digest(&target, digest, &format!("sidecar {}", sidecar.path));
        }
        Ok(())
    }

    /// The file at `url` and, when the URL allows one and it exists, its `.sha256` sidecar.
    /// A store's file must exist (its size is asked for); a plain HTTP server's is found out by
    /// the download itself, which spares a round trip.
    pub(super) async fn list_single_file(
        &self,
        url: &Url,
        remote: &Remote,
    ) -> Result<Vec<Found>, TransferError> {
        let file_name = last_segment(url);
        let (source, size) = match remote {
            Remote::Http(client) => (http_source(client, url), None),
            Remote::Store => self.probe(remote, url).await?.ok_or_else(|| {
                TransferError::Fatal(format!("{} does not exist", redact_url(url)))
            })?,
        };
        let mut found = vec![Found {
            path: RelativePath::new(&file_name)?,
            source,
            size,
        }];
        let Some(sidecar_url) = sidecar_url(url) else {
            return Ok(found);
        };
        if let Some((source, size)) = self.probe(remote, &sidecar_url).await? {
            found.push(Found {
                path: RelativePath::new(&format!("{file_name}{SIDECAR_SUFFIX}"))?,
                source,
                size,
            });
        }
        Ok(found)
    }

    /// The source of the object at `url` and its size (when the remote tells it), or `None`
    /// when there is nothing there.
    async fn probe(
        &self,
        remote: &Remote,
        url: &Url,
    ) -> Result<Option<(FileSource, Option<u64>)>, TransferError> {
        let stall = self.stall_timeout;
        match remote {
            Remote::Store => {
                let store = Store::open(url, &self.store)?;
                let size =
                    with_retries(&self.retry, "head", || within(stall, store.size(""))).await?;
                Ok(size.map(|size| (store.source(""), Some(size))))
            }
            Remote::Http(client) => {
                let exists = with_retries(&self.retry, "sidecar", || {
                    within(stall, http_exists(client, url))
                })
                .await?;
                Ok(exists.then(|| (http_source(client, url), None)))
            }
        }
    }
}

/// The sidecar of the local file `path` (listed as `name`), when there is one.
pub(super) fn beside_local(path: &Path, name: &str) -> Result<Option<Found>, TransferError> {
    let sidecar = PathBuf::from(format!("{}{SIDECAR_SUFFIX}", path.display()));
    if !sidecar.is_file() {
        return Ok(None);
    }
    local_found(&format!("{name}{SIDECAR_SUFFIX}"), sidecar, None).map(Some)
}

/// The `.sha256` sidecar beside a model file's URL (appended to the path, never to the query).
/// A URL with a query string (presigned, tokenized) grants that one object only, so no sidecar
/// is asked for: its refusal would read as if the model itself were refused.
fn sidecar_url(url: &Url) -> Option<Url> {
    if url.query().is_some() {
        tracing::info!(url = %redact_url(url), "the model URL has a query string (presigned or tokenized): no sidecar digest is looked for");
        return None;
    }
    let mut sidecar = url.clone();
    sidecar.set_path(&format!("{}{SIDECAR_SUFFIX}", url.path()));
    Some(sidecar)
}

/// Separates `X.sha256` sidecars (whose `X` is also listed) from the files to download.
pub(super) fn split_sidecars(found: Vec<Found>) -> (Vec<Found>, Vec<(RelativePath, Found)>) {
    let names: Vec<String> = found
        .iter()
        .map(|file| file.path.as_str().to_owned())
        .collect();
    let (sidecars, files): (Vec<Found>, Vec<Found>) = found.into_iter().partition(|file| {
        file.path
            .as_str()
            .strip_suffix(SIDECAR_SUFFIX)
            .is_some_and(|target| names.iter().any(|name| name == target))
    });
    let sidecars = sidecars
        .into_iter()
        .map(|sidecar| {
            let target = sidecar
                .path
                .as_str()
                .strip_suffix(SIDECAR_SUFFIX)
                .unwrap_or_default();
            (
                RelativePath::new(target).expect("a prefix of a valid path is valid"),
                sidecar,
            )
        })
        .collect();
    (files, sidecars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_are_beside_the_path_and_not_asked_of_presigned_urls() {
        let plain = Url::parse("https://host/m/1/model.onnx").unwrap();
        assert_eq!(
            sidecar_url(&plain).unwrap().as_str(),
            "https://host/m/1/model.onnx.sha256"
        );
        let presigned = Url::parse("https://host/m/1/model.onnx?X-Amz-Signature=GOOD").unwrap();
        assert_eq!(sidecar_url(&presigned), None);
    }
}
