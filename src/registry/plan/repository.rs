//! Plans for model repositories (`ROOT/NAME/VERSION`) and for version directories or files named
//! directly, on local disk, in an object store or on a plain HTTP server. A version that is not
//! there is reported with the versions that are.

use std::path::{Path, PathBuf};

use url::Url;

use super::{
    Plan, PlannedFile, Resolver,
    listing::{Found, list_local},
    model_file::choose_model_file,
    sidecar::split_sidecars,
};
use crate::registry::{
    RegistryError,
    redact::error_chain,
    reference::{Location, sort_versions},
    source::TransferError,
    store::{Store, is_plain_http},
};

impl Resolver {
    /// A version directory or model file named directly; a missing local path is named as such,
    /// a missing version directory in a store with the versions beside it.
    pub(super) async fn plan_direct(
        &self,
        location: &Location,
        name: &str,
        version: &str,
    ) -> Result<Plan, RegistryError> {
        if let Location::Local(path) = location
            && !path.exists()
        {
            return Err(RegistryError::NoSuchPath {
                path: path.display().to_string(),
            });
        }
        let planned = self.plan_location(location, name, version).await;
        match location.parent() {
            Some(model_dir) if !location.is_model_file() => {
                self.listing_versions(planned, &model_dir, name, version)
                    .await
            }
            _ => planned,
        }
    }

    /// `ROOT/NAME/VERSION`; a version that is not there is reported with the versions that are.
    pub(super) async fn plan_repository(
        &self,
        root: &Location,
        name: &str,
        version: &str,
    ) -> Result<Plan, RegistryError> {
        if let Location::Local(root) = root {
            check_local_repository(root, name, version)?;
        }
        let model_dir = root.join(name);
        let planned = self
            .plan_location(&model_dir.join(version), name, version)
            .await;
        self.listing_versions(planned, &model_dir, name, version)
            .await
    }

    /// A version directory in an object store that is not there becomes an error listing the
    /// versions that are, in `model_dir`.
    async fn listing_versions(
        &self,
        planned: Result<Plan, RegistryError>,
        model_dir: &Location,
        name: &str,
        version: &str,
    ) -> Result<Plan, RegistryError> {
        let (Err(RegistryError::NotFound { .. }), Location::Remote(url)) = (&planned, model_dir)
        else {
            return planned;
        };
        if is_plain_http(url) {
            return planned;
        }
        let versions = match Store::open(url, &self.store) {
            Ok(store) => store.subdirectories(self.stall_timeout).await,
            Err(err) => Err(err.into()),
        };
        let available = match versions {
            Ok(versions) if versions.is_empty() => "nothing".to_owned(),
            Ok(versions) => versions.join(", "),
            Err(err) => format!("they could not be listed: {}", error_chain(&err)),
        };
        Err(RegistryError::UnknownVersion {
            name: name.to_owned(),
            version: version.to_owned(),
            location: model_dir.join(version).to_string(),
            available,
        })
    }

    async fn plan_location(
        &self,
        location: &Location,
        name: &str,
        version: &str,
    ) -> Result<Plan, RegistryError> {
        let found = self.list_location(location).await?;
        if found.is_empty() {
            return Err(RegistryError::NotFound {
                name: name.to_owned(),
                version: version.to_owned(),
                location: location.to_string(),
            });
        }
        let (files, sidecars) = split_sidecars(found);
        let model_file =
            choose_model_file(&files, None).ok_or_else(|| RegistryError::NoModelFile {
                location: location.to_string(),
            })?;
        let mut plan = Plan {
            name: name.to_owned(),
            version: version.to_owned(),
            reference: String::new(),
            source: location.to_string(),
            model_file,
            files: files.into_iter().map(PlannedFile::from).collect(),
            signature: None,
            local_dir: local_dir(location),
        };
        self.expect_sidecar_digests(&mut plan, sidecars, location)
            .await?;
        Ok(plan)
    }

    /// The files at `location`; none when it is a local path that does not exist.
    async fn list_location(&self, location: &Location) -> Result<Vec<Found>, RegistryError> {
        let listed = match location {
            Location::Local(path) if !path.exists() => return Ok(Vec::new()),
            Location::Local(path) => list_local(path),
            Location::Remote(url) if is_plain_http(url) => self.list_http(url).await,
            Location::Remote(url) => self.list_store(url, location.is_model_file()).await,
        };
        listed.map_err(|source| RegistryError::Transfer {
            location: location.to_string(),
            source,
        })
    }

    /// One file that is not a model (`eval --data`) at a URL, with its `.sha256` sidecar when
    /// there is one: fetched with the same retries, timeouts and verification as a model file.
    pub(crate) async fn plan_file(&self, url: &Url) -> Result<Plan, RegistryError> {
        let location = Location::Remote(url.clone());
        let transfer = |source| RegistryError::Transfer {
            location: location.to_string(),
            source,
        };
        let found = if is_plain_http(url) {
            self.list_http_file(url).await
        } else {
            self.list_store(url, true).await
        }
        .map_err(transfer)?;
        let (files, sidecars) = split_sidecars(found);
        let file = files
            .first()
            .map(|file| file.path.clone())
            .ok_or_else(|| transfer(TransferError::Fatal("no file at this URL".to_owned())))?;
        let mut plan = Plan {
            name: file.to_string(),
            version: String::new(),
            reference: location.to_string(),
            source: location.to_string(),
            model_file: file,
            files: files.into_iter().map(PlannedFile::from).collect(),
            signature: None,
            local_dir: None,
        };
        self.expect_sidecar_digests(&mut plan, sidecars, &location)
            .await?;
        Ok(plan)
    }
}

/// The directory holding a local location's files: the directory itself, or a file's parent.
fn local_dir(location: &Location) -> Option<PathBuf> {
    match location {
        Location::Local(path) if path.is_dir() => Some(path.clone()),
        Location::Local(path) => path.parent().map(Path::to_path_buf),
        Location::Remote(_) => None,
    }
}

/// Names what is missing from a local model repository, and what it holds instead.
fn check_local_repository(root: &Path, name: &str, version: &str) -> Result<(), RegistryError> {
    let shown = root.display().to_string();
    if !root.is_dir() {
        return Err(RegistryError::NoRepository { root: shown });
    }
    let model = root.join(name);
    if !model.is_dir() {
        return Err(RegistryError::UnknownModel {
            name: name.to_owned(),
            root: shown,
            available: subdirectories(root),
        });
    }
    if !model.join(version).exists() {
        return Err(RegistryError::UnknownVersion {
            name: name.to_owned(),
            version: version.to_owned(),
            location: model.join(version).display().to_string(),
            available: subdirectories(&model),
        });
    }
    Ok(())
}

/// The subdirectories of `dir`, numbers in numeric order first, for an error message.
fn subdirectories(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    sort_versions(&mut names);
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Digest, ModelReference, plan::local_resolver};

    #[tokio::test]
    async fn plans_a_local_version_directory_with_sidecars() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("m/1");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("model.onnx"), b"graph").unwrap();
        std::fs::write(dir.join("data/weights.bin"), b"weights").unwrap();
        std::fs::write(
            dir.join("model.onnx.sha256"),
            format!("{}  model.onnx\n", Digest::of_bytes(b"graph")),
        )
        .unwrap();
        let reference = ModelReference::Repository {
            root: Location::Local(root.path().to_path_buf()),
            name: "m".into(),
            version: "1".into(),
        };
        let plan = local_resolver().plan(&reference).await.unwrap();
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["data/weights.bin", "model.onnx"]);
        assert_eq!(plan.model_file.as_str(), "model.onnx");
        let model = plan
            .files
            .iter()
            .find(|f| f.path.as_str() == "model.onnx")
            .unwrap();
        let expected = model.expected.as_ref().unwrap();
        assert_eq!(expected.digest, Digest::of_bytes(b"graph"));
        assert_eq!(expected.origin, "sidecar model.onnx.sha256");
        assert_eq!(plan.local_dir.as_deref(), Some(dir.as_path()));
    }

    #[tokio::test]
    async fn refuses_links_and_directories_without_a_model() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("readme.txt"), b"no model").unwrap();
        let reference = ModelReference::Direct {
            location: Location::Local(root.path().to_path_buf()),
            name: "m".into(),
            version: "1".into(),
        };
        let err = local_resolver()
            .plan(&reference)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no ONNX model"), "{err}");
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("model.onnx")).unwrap();
        let err = local_resolver()
            .plan(&reference)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("links are not copied"), "{err}");
    }
}
