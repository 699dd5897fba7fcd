//! Plans for the MLflow tracking server: a registered model version (by number, alias or stage)
//! or an MLflow 3 logged model (by id). Its artifact directory is listed whole; its `MLmodel`
//! names the ONNX file and carries the signature; its `sha256` tags are the expected digests.

use url::Url;

use super::{
    Plan, PlannedFile, Resolver, listing::Found, model_file::choose_model_file,
    sidecar::split_sidecars,
};
use crate::registry::{
    RegistryError,
    digest::Digest,
    mlflow::{MlModel, MlflowClient, Tag},
    redact::redact_url,
    reference::{Location, ModelReference, Selector},
    relpath::RelativePath,
    source::{FileSource, TransferError},
    store::{Store, is_plain_http},
};

/// The file describing an MLflow model: its flavors (which file is the ONNX model) and signature.
const MLMODEL: &str = "MLmodel";

impl Resolver {
    pub(super) async fn plan_registry(
        &self,
        reference: &ModelReference,
        tracking: &Url,
        name: &str,
        selector: &Selector,
    ) -> Result<Plan, RegistryError> {
        self.plan_version(tracking, name, selector)
            .await
            .map_err(|err| registry_error(reference, tracking, err))
    }

    pub(super) async fn plan_logged_model(
        &self,
        reference: &ModelReference,
        tracking: &Url,
        model_id: &str,
    ) -> Result<Plan, RegistryError> {
        self.plan_logged(tracking, model_id)
            .await
            .map_err(|err| registry_error(reference, tracking, err))
    }

    async fn plan_version(
        &self,
        tracking: &Url,
        name: &str,
        selector: &Selector,
    ) -> Result<Plan, TransferError> {
        let client = self.mlflow(tracking)?;
        let (version, artifact_uri) = version_and_uri(&client, name, selector).await?;
        if !selector.is_pinned() {
            tracing::warn!(
                model = name,
                resolved_version = %version.version,
                "an alias or stage is not a reproducible pin: it was resolved once, at start-up; pin models:/{name}/{} for reproducible deployments",
                version.version
            );
        }
        let mut plan = self
            .plan_mlflow_model(&client, &artifact_uri, name, &version.version)
            .await?;
        expect_tagged_digests(&mut plan, &version.tags, "model-version")?;
        Ok(plan)
    }

    /// An MLflow 3 logged model, by id: named by its own name, versioned by its id, its digests
    /// from its `sha256` tags as a registered version's are.
    async fn plan_logged(&self, tracking: &Url, model_id: &str) -> Result<Plan, TransferError> {
        let client = self.mlflow(tracking)?;
        let logged = client.logged_model(model_id).await?;
        let mut plan = self
            .plan_mlflow_model(
                &client,
                &logged.artifact_uri,
                &logged.name,
                &logged.model_id,
            )
            .await?;
        expect_tagged_digests(&mut plan, &logged.tags, "logged-model")?;
        Ok(plan)
    }

    fn mlflow(&self, tracking: &Url) -> Result<MlflowClient, TransferError> {
        Ok(MlflowClient::from_env(
            tracking.clone(),
            self.retry.clone(),
            self.stall_timeout,
        )?)
    }

    /// The files of the MLflow model at `artifact_uri`; its `MLmodel` names the ONNX file and
    /// carries the signature.
    async fn plan_mlflow_model(
        &self,
        client: &MlflowClient,
        artifact_uri: &str,
        name: &str,
        version: &str,
    ) -> Result<Plan, TransferError> {
        let mlmodel_source = self.artifact_source(client, artifact_uri, MLMODEL)?;
        let (found, mlmodel_text) = tokio::join!(
            self.list_artifacts(client, artifact_uri),
            self.read_small(&mlmodel_source)
        );
        let found = found?;
        // The MLmodel file is read alongside the listing; its answer counts only if it is listed.
        let mlmodel = if found.iter().any(|file| file.path.as_str() == MLMODEL) {
            MlModel::parse(&mlmodel_text?)?
        } else {
            MlModel::default()
        };
        let (files, _) = split_sidecars(found);
        let model_file = choose_model_file(&files, mlmodel.onnx_data()).ok_or_else(|| {
            TransferError::Fatal(format!(
                "version {version} has no ONNX model (its MLmodel has no onnx flavor, and there is no model.onnx)"
            ))
        })?;
        Ok(Plan {
            name: name.to_owned(),
            version: version.to_owned(),
            reference: String::new(),
            source: format!("{} ({artifact_uri})", redact_url(client.tracking())),
            model_file,
            files: files.into_iter().map(PlannedFile::from).collect(),
            signature: mlmodel.signature()?.map(|signature| signature.to_json()),
            local_dir: None,
        })
    }

    /// The source of one file below an artifact URI.
    fn artifact_source(
        &self,
        client: &MlflowClient,
        artifact_uri: &str,
        relative: &str,
    ) -> Result<FileSource, TransferError> {
        if let Some(path) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            return Ok(client.artifact_source(strip_authority(path), relative));
        }
        match Location::parse(artifact_uri)? {
            Location::Remote(url) if !is_plain_http(&url) => {
                let store = Store::open(&url, &self.store)?;
                Ok(store.source(relative))
            }
            location => Err(unreachable_artifacts(&location)),
        }
    }

    async fn list_artifacts(
        &self,
        client: &MlflowClient,
        artifact_uri: &str,
    ) -> Result<Vec<Found>, TransferError> {
        if let Some(path) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            let path = strip_authority(path);
            let listed = client.list_artifacts(path).await?;
            return listed
                .into_iter()
                .map(|file| {
                    let relative = RelativePath::new(&file.path)?;
                    Ok(Found {
                        source: client.artifact_source(path, relative.as_str()),
                        path: relative,
                        size: file.size,
                    })
                })
                .collect();
        }
        match Location::parse(artifact_uri)? {
            Location::Remote(url) if !is_plain_http(&url) => self.list_store(&url, false).await,
            location => Err(unreachable_artifacts(&location)),
        }
    }
}

/// The model version a selector names, and where its files are. Each round trip to a registry
/// costs milliseconds: what is independent is asked at once.
async fn version_and_uri(
    client: &MlflowClient,
    name: &str,
    selector: &Selector,
) -> Result<(crate::registry::mlflow::ModelVersion, String), TransferError> {
    match selector {
        Selector::Version(number) => {
            // Both fail for a missing version; the lookup's error lists the versions.
            let (version, artifact_uri) = tokio::join!(
                client.resolve(name, selector),
                client.download_uri(name, number)
            );
            Ok((version?, artifact_uri?))
        }
        _ => {
            let version = client.resolve(name, selector).await?;
            let artifact_uri = client.download_uri(name, &version.version).await?;
            Ok((version, artifact_uri))
        }
    }
}

/// MLflow tags `sha256` (the model file) and `sha256:PATH` (any other file) of a model version
/// or a logged model (`entity`, for the messages).
fn expect_tagged_digests(
    plan: &mut Plan,
    tags: &[Tag],
    entity: &'static str,
) -> Result<(), TransferError> {
    for tag in tags {
        let target = match tag.key.as_str() {
            "sha256" => plan.model_file.as_str().to_owned(),
            key => match key.strip_prefix("sha256:") {
                Some(path) => path.to_owned(),
                None => continue,
            },
        };
        let digest: Digest = tag.value.parse().map_err(|source| TransferError::Tag {
            entity,
            key: tag.key.clone(),
            source: Box::new(source),
        })?;
        let target = RelativePath::new(&target)?;
        plan.expect_digest(
            &target,
            digest,
            &format!("MLflow {entity} tag '{}'", tag.key),
        );
    }
    Ok(())
}

fn registry_error(
    reference: &ModelReference,
    tracking: &Url,
    source: TransferError,
) -> RegistryError {
    RegistryError::Registry {
        reference: reference.to_string(),
        registry: redact_url(tracking),
        source,
    }
}

fn unreachable_artifacts(location: &Location) -> TransferError {
    TransferError::Fatal(format!(
        "the artifacts are at {location}, which pinserve cannot reach: serve MLflow with proxied \
         artifacts (--artifacts-destination) or keep them in an object store"
    ))
}

/// `mlflow-artifacts://host:port/path` and `mlflow-artifacts:/path` both name `path` on the
/// tracking server itself; the artifact API wants it without a leading slash.
fn strip_authority(path: &str) -> &str {
    let path = match path.strip_prefix("//") {
        Some(rest) => rest.find('/').map_or("", |slash| &rest[slash..]),
        None => path,
    };
    path.trim_start_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_tracking_server_authority() {
        assert_eq!(
            strip_authority("/1/models/m-1/artifacts"),
            "1/models/m-1/artifacts"
        );
        assert_eq!(
            strip_authority("//mlflow:5000/1/models/m-1/artifacts"),
            "1/models/m-1/artifacts"
        );
    }
}
