//! From a reference to a plan: the files of one model version, where each comes from, and the
//! digest each must have. Nothing is downloaded here except small metadata (listings, the
//! `MLmodel` file, `.sha256` sidecars).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use url::Url;

use super::{
    Expected, Plan, PlannedFile, RegistryError,
    digest::Digest,
    mlflow::{METADATA_TIMEOUT, MlModel, MlflowClient},
    redact::redact_url,
    reference::{Location, ModelReference, Selector},
    relpath::RelativePath,
    retry::{RetryPolicy, with_retries},
    source::{FileSource, TransferError, check_status, describe_reqwest, within},
    store::{Store, StoreOptions, is_plain_http},
};

/// The file a model repository version directory serves when no MLmodel names another.
pub const DEFAULT_MODEL_FILE: &str = "model.onnx";
/// The file describing an MLflow model: its flavors (which file is the ONNX model) and signature.
const MLMODEL: &str = "MLmodel";
const SIDECAR_SUFFIX: &str = ".sha256";
/// Where a digest given on the command line is said to come from.
pub const PINNED_ORIGIN: &str = "--model-sha256";
/// Sidecars and MLmodel files are tiny; anything larger is not what it claims to be.
const SMALL_FILE_LIMIT: usize = 1 << 20;

pub struct Resolver {
    pub retry: RetryPolicy,
    pub store: StoreOptions,
    /// `--model-sha256`: the model file's digest as the manifest pins it.
    pub model_sha256: Option<Digest>,
    /// `--fetch-stall-timeout`: how long a metadata request may wait for its next bytes.
    pub stall_timeout: Duration,
}

/// Where a single file named by URL is read from.
enum Remote {
    Store,
    Http(reqwest::Client),
}

/// A file found at a location, before digests are attached.
struct Found {
    path: RelativePath,
    source: FileSource,
    size: Option<u64>,
}

impl Resolver {
    pub async fn plan(&self, reference: &ModelReference) -> Result<Plan, RegistryError> {
        let shown = reference.cache_key();
        let mut plan = match reference {
            ModelReference::Repository {
                root,
                name,
                version,
            } => self.plan_repository(root, name, version).await?,
            ModelReference::Direct {
                location,
                name,
                version,
            } => self.plan_direct(location, name, version).await?,
            ModelReference::Registry {
                tracking,
                name,
                selector,
            } => self
                .plan_registry(tracking, name, selector)
                .await
                .map_err(|err| registry_error(reference, tracking, err))?,
            ModelReference::LoggedModel { tracking, model_id } => self
                .plan_logged_model(tracking, model_id)
                .await
                .map_err(|err| registry_error(reference, tracking, err))?,
        };
        plan.reference = shown;
        if let Some(digest) = self.model_sha256 {
            plan.expect_model_digest(digest, PINNED_ORIGIN);
        }
        Ok(plan)
    }

    /// A version directory or model file named directly; a missing local path is named as such,
    /// a missing version directory in a store with the versions beside it.
    async fn plan_direct(
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
    async fn plan_repository(
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
            Err(err) => format!("they could not be listed: {err}"),
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
        let transfer = |source| RegistryError::Transfer {
            location: location.to_string(),
            source,
        };
        let not_found = || RegistryError::NotFound {
            name: name.to_owned(),
            version: version.to_owned(),
            location: location.to_string(),
        };
        let found = match location {
            Location::Local(path) if !path.exists() => return Err(not_found()),
            Location::Local(path) => list_local(path).map_err(transfer)?,
            Location::Remote(url) if is_plain_http(url) => {
                self.list_http(url).await.map_err(transfer)?
            }
            Location::Remote(url) => self
                .list_store(url, location.is_model_file())
                .await
                .map_err(transfer)?,
        };
        if found.is_empty() {
            return Err(not_found());
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
            local_dir: match location {
                Location::Local(path) if path.is_dir() => Some(path.clone()),
                Location::Local(path) => path.parent().map(Path::to_path_buf),
                Location::Remote(_) => None,
            },
        };
        self.expect_sidecar_digests(&mut plan, sidecars, location)
            .await?;
        Ok(plan)
    }

    /// One file that is not a model (`eval --data`) at a URL, with its `.sha256` sidecar when
    /// there is one: fetched with the same retries, timeouts and verification as a model file.
    pub async fn plan_file(&self, url: &Url) -> Result<Plan, RegistryError> {
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

    /// Reads each sidecar and makes its digest the one its file must have.
    async fn expect_sidecar_digests(
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

    async fn list_store(&self, url: &Url, single_file: bool) -> Result<Vec<Found>, TransferError> {
        if single_file {
            return self.list_single_file(url, &Remote::Store).await;
        }
        let store = Store::open(url, &self.store)?;
        let stall = self.stall_timeout;
        let listed = with_retries(&self.retry, "list", || store.list(stall)).await?;
        Ok(listed
            .into_iter()
            .map(|(path, size)| Found {
                source: store.source(path.as_str()),
                path,
                size: Some(size),
            })
            .collect())
    }

    /// Plain HTTP cannot list a directory: a version directory serves `model.onnx`, and a
    /// `.sha256` sidecar is used when the server has one.
    async fn list_http(&self, url: &Url) -> Result<Vec<Found>, TransferError> {
        let file_url = if Location::Remote(url.clone()).is_model_file() {
            url.clone()
        } else {
            match Location::Remote(url.clone()).join(DEFAULT_MODEL_FILE) {
                Location::Remote(url) => url,
                Location::Local(_) => unreachable!("joining a URL gives a URL"),
            }
        };
        self.list_http_file(&file_url).await
    }

    /// One file on a plain HTTP server, and its `.sha256` sidecar when the server has one.
    async fn list_http_file(&self, file_url: &Url) -> Result<Vec<Found>, TransferError> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|err| TransferError::Client(Arc::new(err)))?;
        self.list_single_file(file_url, &Remote::Http(client)).await
    }

    /// The file at `url` and, when the URL allows one and it exists, its `.sha256` sidecar.
    /// A store's file must exist (its size is asked for); a plain HTTP server's is found out by
    /// the download itself, which spares a round trip.
    async fn list_single_file(
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

    async fn plan_registry(
        &self,
        tracking: &Url,
        name: &str,
        selector: &Selector,
    ) -> Result<Plan, TransferError> {
        let client = self.mlflow(tracking)?;
        // Each round trip to a registry costs milliseconds: ask for what is independent at once.
        let (version, artifact_uri) = match selector {
            Selector::Version(number) => {
                // Both fail for a missing version; the lookup's error lists the versions.
                let (version, artifact_uri) = tokio::join!(
                    client.resolve(name, selector),
                    client.download_uri(name, number)
                );
                (version?, artifact_uri?)
            }
            _ => {
                let version = client.resolve(name, selector).await?;
                let artifact_uri = client.download_uri(name, &version.version).await?;
                (version, artifact_uri)
            }
        };
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
        self.expect_tagged_digests(&mut plan, &version.tags, "model-version")?;
        Ok(plan)
    }

    /// An MLflow 3 logged model, by id: named by its own name, versioned by its id, its digests
    /// from its `sha256` tags as a registered version's are.
    async fn plan_logged_model(
        &self,
        tracking: &Url,
        model_id: &str,
    ) -> Result<Plan, TransferError> {
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
        self.expect_tagged_digests(&mut plan, &logged.tags, "logged-model")?;
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

    /// Reads a small file (sidecar, MLmodel) whole, as text, up to [`SMALL_FILE_LIMIT`].
    async fn read_small(&self, source: &FileSource) -> Result<String, TransferError> {
        let stall = self.stall_timeout;
        with_retries(&self.retry, "read", || async {
            let opened = within(stall, source.open(0)).await?;
            let bytes = opened.read_limited(SMALL_FILE_LIMIT, stall, source).await?;
            String::from_utf8(bytes)
                .map_err(|_| TransferError::Fatal(format!("{source} is not UTF-8 text")))
        })
        .await
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

    /// MLflow tags `sha256` (the model file) and `sha256:PATH` (any other file) of a model
    /// version or a logged model (`entity`, for the messages).
    fn expect_tagged_digests(
        &self,
        plan: &mut Plan,
        tags: &[super::mlflow::Tag],
        entity: &str,
    ) -> Result<(), TransferError> {
        for tag in tags {
            let target = match tag.key.as_str() {
                "sha256" => plan.model_file.as_str().to_owned(),
                key => match key.strip_prefix("sha256:") {
                    Some(path) => path.to_owned(),
                    None => continue,
                },
            };
            let digest: Digest = tag.value.parse().map_err(|reason| {
                TransferError::Fatal(format!("{entity} tag '{}': {reason}", tag.key))
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
}

fn registry_error(reference: &ModelReference, tracking: &Url, err: TransferError) -> RegistryError {
    RegistryError::Registry {
        reference: reference.to_string(),
        registry: redact_url(tracking),
        message: err.to_string(),
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

fn last_segment(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.next_back().map(str::to_owned))
        .unwrap_or_default()
}

fn http_source(client: &reqwest::Client, url: &Url) -> FileSource {
    FileSource::Http {
        client: client.clone(),
        url: url.clone(),
    }
}

async fn http_exists(client: &reqwest::Client, url: &Url) -> Result<bool, TransferError> {
    let response = client
        .head(url.clone())
        .timeout(METADATA_TIMEOUT)
        .send()
        .await
        .map_err(|err| describe_reqwest(url, &err))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(false);
    }
    check_status(url, &response).map(|()| true)
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

/// Numbers in numeric order, then names in alphabetical order.
pub fn sort_versions(names: &mut [String]) {
    names.sort_by_key(|name| (name.parse::<u64>().unwrap_or(u64::MAX), name.clone()));
}

/// Lists a local file, or a directory's files recursively. Links are refused: a fetch copies
/// files, and a link could point anywhere.
fn list_local(path: &Path) -> Result<Vec<Found>, TransferError> {
    let local_error = TransferError::local;
    let metadata = std::fs::metadata(path).map_err(|err| local_error(path, err))?;
    if !metadata.is_dir() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut found = vec![local_found(
            &name,
            path.to_path_buf(),
            Some(metadata.len()),
        )?];
        let sidecar = PathBuf::from(format!("{}{SIDECAR_SUFFIX}", path.display()));
        if sidecar.is_file() {
            found.push(local_found(
                &format!("{name}{SIDECAR_SUFFIX}"),
                sidecar,
                None,
            )?);
        }
        return Ok(found);
    }
    let mut found = Vec::new();
    let mut pending = vec![(path.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|err| local_error(&dir, err))? {
            let entry = entry.map_err(|err| local_error(&dir, err))?;
            let kind = entry
                .file_type()
                .map_err(|err| local_error(&entry.path(), err))?;
            let relative = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if kind.is_symlink() {
                return Err(TransferError::Fatal(format!(
                    "{}: links are not copied",
                    entry.path().display()
                )));
            } else if kind.is_dir() {
                pending.push((entry.path(), format!("{relative}/")));
            } else {
                let size = entry
                    .metadata()
                    .map_err(|err| local_error(&entry.path(), err))?
                    .len();
                found.push(local_found(&relative, entry.path(), Some(size))?);
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn local_found(relative: &str, path: PathBuf, size: Option<u64>) -> Result<Found, TransferError> {
    Ok(Found {
        path: RelativePath::new(relative)?,
        source: FileSource::Local(path),
        size,
    })
}

/// Separates `X.sha256` sidecars (whose `X` is also listed) from the files to download.
fn split_sidecars(found: Vec<Found>) -> (Vec<Found>, Vec<(RelativePath, Found)>) {
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

/// The file ONNX Runtime loads: the one MLmodel names, else `model.onnx`, else the only
/// top-level `.onnx` file.
fn choose_model_file(files: &[Found], named: Option<&str>) -> Option<RelativePath> {
    let exists = |name: &str| {
        files
            .iter()
            .find(|file| file.path.as_str() == name)
            .map(|file| file.path.clone())
    };
    if let Some(named) = named {
        return exists(named);
    }
    let only_onnx_in = |folder: &str| {
        let mut models = files.iter().filter(|file| {
            let path = file.path.as_str();
            path.ends_with(".onnx")
                && path
                    .strip_prefix(folder)
                    .is_some_and(|rest| !rest.contains('/'))
        });
        match (models.next(), models.next()) {
            (Some(only), None) => Some(only.path.clone()),
            _ => None,
        }
    };
    exists(DEFAULT_MODEL_FILE)
        .or_else(|| only_onnx_in(""))
        .or_else(|| {
            // A single version folder (`1/model.onnx`), as KServe's storage initializer and
            // Triton's repositories lay a model out, when nothing is at the top.
            let mut folders = files
                .iter()
                .filter_map(|file| file.path.as_str().split_once('/').map(|(dir, _)| dir));
            let folder = folders.next()?;
            if folders.any(|other| other != folder) {
                return None;
            }
            let prefix = format!("{folder}/");
            exists(&format!("{prefix}{DEFAULT_MODEL_FILE}")).or_else(|| only_onnx_in(&prefix))
        })
}

impl From<Found> for PlannedFile {
    fn from(found: Found) -> PlannedFile {
        PlannedFile {
            path: found.path,
            source: found.source,
            size: found.size,
            expected: None,
        }
    }
}

impl Plan {
    fn expect_digest(&mut self, target: &RelativePath, digest: Digest, origin: &str) {
        if let Some(file) = self.files.iter_mut().find(|file| &file.path == target) {
            file.expected = Some(Expected {
                digest,
                origin: origin.to_owned(),
            });
        }
    }

    fn expect_model_digest(&mut self, digest: Digest, origin: &str) {
        let model_file = self.model_file.clone();
        self.expect_digest(&model_file, digest, origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(paths: &[&str]) -> Vec<Found> {
        paths
            .iter()
            .map(|path| local_found(path, PathBuf::from(path), Some(1)).unwrap())
            .collect()
    }

    #[test]
    fn the_model_file_is_found_at_the_top_or_in_a_single_version_folder() {
        let chosen = |paths: &[&str]| {
            choose_model_file(&found(paths), None).map(|path| path.as_str().to_owned())
        };
        assert_eq!(
            chosen(&["model.onnx", "other.onnx"]).as_deref(),
            Some("model.onnx")
        );
        assert_eq!(
            chosen(&["net.onnx", "net.bin"]).as_deref(),
            Some("net.onnx")
        );
        assert_eq!(chosen(&["a.onnx", "b.onnx"]), None);
        // KServe's /mnt/models and Triton's repositories: one version folder.
        assert_eq!(
            chosen(&["1/model.onnx", "1/weights.bin"]).as_deref(),
            Some("1/model.onnx")
        );
        assert_eq!(
            chosen(&["README", "3/net.onnx"]).as_deref(),
            Some("3/net.onnx")
        );
        assert_eq!(chosen(&["1/model.onnx", "2/model.onnx"]), None);
        assert_eq!(chosen(&["1/a.onnx", "1/b.onnx"]), None);
        assert_eq!(chosen(&["1/sub/model.onnx"]), None);
        assert_eq!(
            chosen(&["data/weights.bin", "model.onnx"]).as_deref(),
            Some("model.onnx")
        );
    }

    fn local_plan_resolver() -> Resolver {
        Resolver {
            retry: RetryPolicy::new(0),
            store: StoreOptions::default(),
            model_sha256: None,
            stall_timeout: Duration::from_secs(5),
        }
    }

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
        let plan = local_plan_resolver().plan(&reference).await.unwrap();
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
    async fn the_pinned_digest_wins_over_a_sidecar() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("model.onnx"), b"graph").unwrap();
        std::fs::write(
            root.path().join("model.onnx.sha256"),
            Digest::of_bytes(b"other").to_string(),
        )
        .unwrap();
        let mut resolver = local_plan_resolver();
        resolver.model_sha256 = Some(Digest::of_bytes(b"graph"));
        let reference = ModelReference::Direct {
            location: Location::Local(root.path().join("model.onnx")),
            name: "m".into(),
            version: "1".into(),
        };
        let plan = resolver.plan(&reference).await.unwrap();
        let expected = plan.files[0].expected.as_ref().unwrap();
        assert_eq!(
            (expected.digest, expected.origin.as_str()),
            (Digest::of_bytes(b"graph"), "--model-sha256")
        );
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
        let err = local_plan_resolver()
            .plan(&reference)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no ONNX model"), "{err}");
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("model.onnx")).unwrap();
        let err = local_plan_resolver()
            .plan(&reference)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("links are not copied"), "{err}");
    }

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
