//! What files a location holds: a local file or directory (walked recursively), an object-store
//! prefix, or one file on a plain HTTP server (which cannot list a directory).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use url::Url;

use super::{Resolver, model_file::DEFAULT_MODEL_FILE, sidecar};
use crate::registry::{
    mlflow::METADATA_TIMEOUT,
    reference::Location,
    relpath::RelativePath,
    retry::with_retries,
    source::{FileSource, TransferError, check_status, describe_reqwest},
    store::Store,
};

/// A file found at a location, before digests are attached.
pub(super) struct Found {
    pub(super) path: RelativePath,
    pub(super) source: FileSource,
    pub(super) size: Option<u64>,
}

/// Where a single file named by URL is read from.
pub(super) enum Remote {
    Store,
    Http(reqwest::Client),
}

impl Resolver {
    pub(super) async fn list_store(
        &self,
        url: &Url,
        single_file: bool,
    ) -> Result<Vec<Found>, TransferError> {
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
    pub(super) async fn list_http(&self, url: &Url) -> Result<Vec<Found>, TransferError> {
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
    pub(super) async fn list_http_file(&self, file_url: &Url) -> Result<Vec<Found>, TransferError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| TransferError::Client(Arc::new(err)))?;
        self.list_single_file(file_url, &Remote::Http(client)).await
    }
}

pub(super) fn last_segment(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.next_back().map(str::to_owned))
        .unwrap_or_default()
}

pub(super) fn http_source(client: &reqwest::Client, url: &Url) -> FileSource {
    FileSource::Http {
        client: client.clone(),
        url: url.clone(),
    }
}

pub(super) async fn http_exists(
    client: &reqwest::Client,
    url: &Url,
) -> Result<bool, TransferError> {
    let response = client
        .head(url.clone())
        .timeout(METADATA_TIMEOUT)
        .send()
        .await
        .map_err(|err| describe_reqwest(url, err))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(false);
    }
    check_status(url, &response).map(|()| true)
}

/// Lists a local file (with its sidecar), or a directory's files recursively. Links are
/// refused: a fetch copies files, and a link could point anywhere.
pub(super) fn list_local(path: &Path) -> Result<Vec<Found>, TransferError> {
    let metadata = std::fs::metadata(path).map_err(|err| TransferError::local(path, err))?;
    if metadata.is_dir() {
        list_local_dir(path)
    } else {
        list_local_file(path, metadata.len())
    }
}

fn list_local_file(path: &Path, size: u64) -> Result<Vec<Found>, TransferError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found = vec![local_found(&name, path.to_path_buf(), Some(size))?];
    if let Some(sidecar) = sidecar::beside_local(path, &name)? {
        found.push(sidecar);
    }
    Ok(found)
}

fn list_local_dir(path: &Path) -> Result<Vec<Found>, TransferError> {
    let local_error = TransferError::local;
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

pub(super) fn local_found(
    relative: &str,
    path: PathBuf,
    size: Option<u64>,
) -> Result<Found, TransferError> {
    Ok(Found {
        path: RelativePath::new(relative)?,
        source: FileSource::Local(path),
        size,
    })
}
