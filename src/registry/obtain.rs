//! The pipeline run end to end: a [`ModelReference`] in, a [`ModelArtifact`] (or, for `fetch`,
//! a [`Manifest`]) out, all stages' errors as one [`RegistryError`].
//!
//! The two ways a model reaches local disk: `fetch` fills a directory for a serving container to
//! load later, and `serve` prepares one for itself (loading local files in place, fetching
//! remote ones into its cache, which it then trims: [`cache`](super::cache)). Both reuse a
//! complete, verified earlier download of the same version instead of downloading again.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
};

use super::{
    Digest, Expected, ModelArtifact, ModelReference, Plan, PlannedFile, RegistryError,
    RelativePath, Resolver,
    cache::Cache,
    fetch::{FetchError, FetchOptions, Wanted, WantedDigest, cached, fetch},
    manifest::Manifest,
    plan::PINNED_ORIGIN,
    signed,
};
use crate::{metrics::ModelLabels, signing::Policy};

/// Fetches `reference` into `dest` (the init container's job).
pub(crate) async fn into_directory(
    reference: &ModelReference,
    dest: &Path,
    resolver: &Resolver,
    options: &FetchOptions,
) -> Result<Manifest, RegistryError> {
    bounded(options, async {
        if reference.is_pinned()
            && let Some(manifest) = reuse(dest, before_planning(reference, resolver), options).await
        {
            return Ok(manifest);
        }
        let plan = resolver.plan(reference).await?;
        download(&plan, dest, options).await
    })
    .await
}

/// `--fetch-timeout` bounds the whole fetch: resolution, listings, sidecars and `MLmodel` as
/// much as the download, so a registry that never answers cannot hang an init container.
async fn bounded<T>(
    options: &FetchOptions,
    work: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    tokio::time::timeout(options.timeout, work)
        .await
        .unwrap_or(Err(FetchError::Timeout(options.timeout).into()))
}

/// Prepares `reference` for loading: local files in place, remote ones in `cache`, where the
/// version is claimed for the life of the process and older ones are evicted once it is ready.
pub(crate) async fn for_serving(
    reference: &ModelReference,
    cache: &Cache,
    resolver: &Resolver,
    options: &FetchOptions,
) -> Result<ModelArtifact, RegistryError> {
    let artifact = bounded(options, prepare(reference, cache, resolver, options)).await?;
    if !reference.is_local() {
        cache.evict((&artifact.name, &artifact.version)).await;
    }
    Ok(artifact)
}

async fn prepare(
    reference: &ModelReference,
    cache: &Cache,
    resolver: &Resolver,
    options: &FetchOptions,
) -> Result<ModelArtifact, RegistryError> {
    if let Some((name, version)) = cached_name(reference, cache) {
        cache.claim(&name, version).await?;
        let _fetching = cache.fetching(&name, version).await?;
        let dest = cache.version_dir(&name, version);
        if let Some(manifest) = reuse(&dest, before_planning(reference, resolver), options).await {
            return artifact_from(&dest, &manifest);
        }
    }
    let plan = resolver.plan(reference).await?;
    if let Some(dir) = &plan.local_dir {
        return verify_in_place(&plan, dir, options.signing.as_ref()).await;
    }
    cache.claim(&plan.name, &plan.version).await?;
    let _fetching = cache.fetching(&plan.name, &plan.version).await?;
    let dest = cache.version_dir(&plan.name, &plan.version);
    let manifest = download(&plan, &dest, options).await?;
    artifact_from(&dest, &manifest)
}

/// Where a pinned remote reference's earlier download would be, known before planning: its
/// name and version, or for a logged model (whose name only the registry knows) the name it
/// was cached under.
fn cached_name<'a>(reference: &'a ModelReference, cache: &Cache) -> Option<(String, &'a str)> {
    if !reference.is_pinned() || reference.is_local() {
        return None;
    }
    let version = reference.pinned_version()?;
    match reference {
        ModelReference::LoggedModel { .. } => Some((cache.name_of(version)?, version)),
        _ => Some((reference.name().to_owned(), version)),
    }
}

/// Downloads the one file at `url` (held-out data for `eval`) into `dest`, an empty directory,
/// verified against the `.sha256` sidecar beside it when there is one; returns its local path.
/// Data at a URL may change under the same name, so nothing earlier is reused. Data is no model
/// version: `options` carry no signing policy (`FetchArgs::transfer_options`).
pub(crate) async fn file_into(
    url: &url::Url,
    dest: &Path,
    resolver: &Resolver,
    options: &FetchOptions,
) -> Result<PathBuf, RegistryError> {
    bounded(options, async {
        let plan = resolver.plan_file(url).await?;
        let labels = ModelLabels {
            model: plan.name.clone(),
            version: plan.version.clone(),
        };
        tracing::info!(source = %plan.source, dest = %dest.display(), "fetching");
        let manifest = fetch(&plan, dest, options, &labels).await?;
        Ok(manifest.model_file.under(dest))
    })
    .await
}

/// What `pinserve fetch` wrote into `dir`, checked against its manifest (sizes; the digests
/// were verified when it was written), when given against the pinned model digest, and with a
/// signing policy against the signature, every file hashed again: the directory may have
/// passed through other hands (a shared volume) since the fetch.
pub(crate) async fn from_fetched(
    dir: &Path,
    pinned: Option<Digest>,
    signing: Option<&Policy>,
) -> Result<ModelArtifact, RegistryError> {
    let manifest = Manifest::read(dir)
        .map_err(FetchError::from)?
        .ok_or_else(|| RegistryError::NotFetched {
            dir: dir.to_path_buf(),
        })?;
    manifest.verify(dir, false).map_err(FetchError::from)?;
    if let (Some(expected), Some(found)) = (pinned, manifest.model_file_digest())
        && expected != found
    {
        return Err(FetchError::DigestMismatch {
            path: manifest.model_file.to_string(),
            expected,
            found,
            origin: PINNED_ORIGIN.to_owned(),
        }
        .into());
    }
    let signed = signed::verify_off_runtime(signing, dir, BTreeMap::new()).await?;
    artifact_from(dir, &Manifest { signed, ..manifest })
}

/// Reuses `dest` when its plan matches, or downloads into it.
async fn download(
    plan: &Plan,
    dest: &Path,
    options: &FetchOptions,
) -> Result<Manifest, RegistryError> {
    if let Some(manifest) = reuse(dest, of_plan(plan), options).await {
        return Ok(manifest);
    }
    let labels = ModelLabels {
        model: plan.name.clone(),
        version: plan.version.clone(),
    };
    tracing::info!(
        model = %plan.name,
        version = %plan.version,
        source = %plan.source,
        files = plan.files.len(),
        bytes = plan.total_size(),
        dest = %dest.display(),
        "fetching"
    );
    let manifest = fetch(plan, dest, options, &labels).await?;
    let verified_against = match plan.files.iter().find(|file| file.path == plan.model_file) {
        Some(PlannedFile {
            expected: Some(expected),
            ..
        }) => expected.origin.clone(),
        _ => "nothing: no expected digest was given, so this one is recorded".to_owned(),
    };
    tracing::info!(
        model = %manifest.model,
        version = %manifest.version,
        dest = %dest.display(),
        sha256 = manifest.model_file_digest().map(|digest| digest.to_string()).unwrap_or_default(),
        verified_against,
        "fetched and verified"
    );
    Ok(manifest)
}

/// A pinned reference's earlier download, reused without asking the registry. Before planning,
/// the only digest known is `--model-sha256`; tag and sidecar digests were enforced when the
/// download was written, for this very reference.
fn before_planning(reference: &ModelReference, resolver: &Resolver) -> Wanted {
    let key = reference.cache_key();
    Wanted {
        same: Box::new(move |m| m.reference == key),
        digests: resolver
            .model_sha256
            .map(|digest| WantedDigest {
                file: None,
                expected: Expected {
                    digest,
                    origin: PINNED_ORIGIN.to_owned(),
                },
            })
            .into_iter()
            .collect(),
    }
}

/// An earlier download of the same plan: the same version from the same source, every planned
/// file present with its listed size, and every expected digest (flag, tag, sidecar) recorded.
fn of_plan(plan: &Plan) -> Wanted {
    let (name, version, source) = (plan.name.clone(), plan.version.clone(), plan.source.clone());
    let sizes: Vec<(RelativePath, Option<u64>)> = plan
        .files
        .iter()
        .map(|file| (file.path.clone(), file.size))
        .collect();
    let same = move |m: &Manifest| {
        m.model == name
            && m.version == version
            && m.source == source
            && sizes.iter().all(|(path, size)| {
                m.files
                    .iter()
                    .any(|file| &file.path == path && size.is_none_or(|size| size == file.size))
            })
    };
    let digests = plan
        .files
        .iter()
        .filter_map(|file| {
            file.expected.clone().map(|expected| WantedDigest {
                file: Some(file.path.clone()),
                expected,
            })
        })
        .collect();
    Wanted {
        same: Box::new(same),
        digests,
    }
}

/// A verified earlier download in `dest` that is the `wanted` one, signed as `options`
/// require. Hashing large files blocks, so it runs off the async runtime.
async fn reuse(dest: &Path, wanted: Wanted, options: &FetchOptions) -> Option<Manifest> {
    let dest = dest.to_path_buf();
    let shown = dest.display().to_string();
    let signing = options.signing.clone();
    let manifest = tokio::task::spawn_blocking(move || cached(&dest, &wanted, signing.as_ref()))
        .await
        .ok()
        .flatten()?;
    tracing::info!(dir = %shown, model = %manifest.model, version = %manifest.version, "reusing the verified earlier download");
    Some(manifest)
}

/// Local files are served where they are, each file with an expected digest checked first,
/// then, with a signing policy, the whole directory against its signature (the digests just
/// computed are not computed again). A model file without an expected digest or a signature is
/// left unhashed here: the caller computes its digest (for `pinserve_model_info`) while ONNX
/// Runtime loads it, instead of before.
async fn verify_in_place(
    plan: &Plan,
    dir: &Path,
    signing: Option<&Policy>,
) -> Result<ModelArtifact, RegistryError> {
    let plan = plan.clone();
    let dir = dir.to_path_buf();
    let signing = signing.cloned();
    tokio::task::spawn_blocking(move || {
        let mut known = BTreeMap::new();
        for file in &plan.files {
            if let Some(expected) = &file.expected {
                let found = check_expected(&file.path.under(&dir), expected)?;
                known.insert(file.path.to_string(), found);
            }
        }
        let signed = signed::verify(signing.as_ref(), &dir, &known)?;
        let model_file = plan.model_file.to_string();
        let sha256 = known.get(&model_file).copied().or_else(|| {
            signed
                .as_ref()
                .and_then(|signed| signed.files.get(&model_file).copied())
        });
        Ok(ModelArtifact {
            name: plan.name.clone(),
            version: plan.version.clone(),
            model_file: plan.model_file.under(&dir),
            sha256,
            signature: plan.signature.clone(),
            signed,
            dir,
        })
    })
    .await
    .map_err(RegistryError::task("verifying the model files"))?
}

/// The file's digest, which must be the expected one.
fn check_expected(path: &Path, expected: &Expected) -> Result<Digest, FetchError> {
    let found = Digest::of_file(path).map_err(|source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if expected.digest != found {
        return Err(FetchError::DigestMismatch {
            path: path.display().to_string(),
            expected: expected.digest,
            found,
            origin: expected.origin.clone(),
        });
    }
    Ok(found)
}

fn artifact_from(dir: &Path, manifest: &Manifest) -> Result<ModelArtifact, RegistryError> {
    Ok(ModelArtifact {
        name: manifest.model.clone(),
        version: manifest.version.clone(),
        dir: dir.to_path_buf(),
        model_file: manifest.model_file.under(dir),
        sha256: manifest.model_file_digest(),
        signature: manifest.signature.clone(),
        signed: manifest.signed.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fetch::tests::{local_plan, options};

    #[tokio::test]
    async fn a_plan_whose_digest_an_earlier_download_contradicts_is_fetched_again_and_refused() {
        let source = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let plan = local_plan(source.path(), &[("model.onnx", b"graph")], None);
        download(&plan, dest.path(), &options()).await.unwrap();
        let same = local_plan(source.path(), &[("model.onnx", b"graph")], None);
        download(&same, dest.path(), &options()).await.unwrap();

        let other = Digest::of_bytes(b"another graph");
        let pinned = local_plan(source.path(), &[("model.onnx", b"graph")], Some(other));
        let err = download(&pinned, dest.path(), &options())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::Fetch(FetchError::DigestMismatch { expected, .. }) if *expected == other),
            "{err}"
        );
        assert!(Manifest::read(dest.path()).unwrap().is_none());
    }
}
