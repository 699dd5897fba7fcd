//! Object stores (S3 and S3-compatible, GCS, Azure Blob, WebDAV-style HTTP) through the
//! `object_store` crate, configured from each cloud's standard credential environment
//! (`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_*`) as the cloud's own tools are.

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt, TryStreamExt};
use object_store::{
    ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    azure::{AzureConfigKey, MicrosoftAzureBuilder},
    gcp::{GoogleCloudStorageBuilder, GoogleConfigKey},
    http::HttpBuilder,
    local::LocalFileSystem,
    path::Path as StorePath,
};
use url::Url;

use super::{
    RegistryError,
    redact::redact_url,
    relpath::RelativePath,
    resolve::sort_versions,
    source::{FileSource, TransferError, classify_store_error, within},
};

/// Per-request bound for object-store requests, bodies included: far beyond any download, which
/// --fetch-timeout bounds as a whole (object_store's own default of 30 s would cut off large
/// models).
const REQUEST_TIMEOUT: &str = "24h";

/// How stores are reached beyond what the URL and the environment say.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// An S3-compatible endpoint (MinIO, Ceph, a local emulator), or a GCS or Azure one.
    pub endpoint: Option<String>,
}

/// An object store and the path a URL points at inside it.
pub struct Store {
    store: Arc<dyn ObjectStore>,
    base: StorePath,
    shown: String,
}

/// Whether `url` is served by a plain HTTP(S) server rather than a recognised object store. An
/// HTTPS URL with a query string (a presigned S3 or GCS URL, a SAS URL) is fetched as it is:
/// its query is the credential, which a store client would drop in favour of its own.
pub fn is_plain_http(url: &Url) -> bool {
    let presigned = matches!(url.scheme(), "http" | "https") && url.query().is_some();
    presigned
        || matches!(
            ObjectStoreScheme::parse(url),
            Ok((ObjectStoreScheme::Http, _))
        )
}

impl Store {
    pub fn open(url: &Url, options: &StoreOptions) -> Result<Store, RegistryError> {
        let shown = redact_url(url);
        let config = |err: &dyn std::fmt::Display| RegistryError::Config(format!("{shown}: {err}"));
        let (scheme, base) = ObjectStoreScheme::parse(url).map_err(|err| config(&err))?;
        // One retry policy (pinserve's) governs every fetch, and large objects must not hit a
        // whole-request timeout: stalls are caught per chunk, and --fetch-timeout bounds the
        // whole. Both are set key by key, so the client settings the environment gives (such as
        // AZURE_ALLOW_HTTP) stay in force.
        let no_retries = RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        };
        let endpoint = options.endpoint.clone();
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                        REQUEST_TIMEOUT,
                    )
                    .with_retry(no_retries);
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(allow_http);
                }
                Arc::new(builder.build().map_err(|err| config(&err))?)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut builder = GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_config(
                        GoogleConfigKey::Client(ClientConfigKey::Timeout),
                        REQUEST_TIMEOUT,
                    )
                    .with_retry(no_retries);
                if let Some(endpoint) = endpoint {
                    builder = builder.with_base_url(&endpoint).with_config(
                        GoogleConfigKey::Client(ClientConfigKey::AllowHttp),
                        allow_http.to_string(),
                    );
                }
                Arc::new(builder.build().map_err(|err| config(&err))?)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_config(
                        AzureConfigKey::Client(ClientConfigKey::Timeout),
                        REQUEST_TIMEOUT,
                    )
                    .with_retry(no_retries);
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(allow_http);
                }
                Arc::new(builder.build().map_err(|err| config(&err))?)
            }
            ObjectStoreScheme::Http => Arc::new(
                HttpBuilder::new()
                    .with_url(&url[..url::Position::BeforePath])
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout_disabled()
                            .with_allow_http(true),
                    )
                    .with_retry(no_retries)
                    .build()
                    .map_err(|err| config(&err))?,
            ),
            ObjectStoreScheme::Local => Arc::new(LocalFileSystem::new()),
            other => {
                return Err(RegistryError::Config(format!(
                    "{shown}: unsupported store {other:?}"
                )));
            }
        };
        Ok(Store { store, base, shown })
    }

    fn path_of(&self, relative: &str) -> StorePath {
        relative
            .split('/')
            .fold(self.base.clone(), |path, segment| path.join(segment))
    }

    /// The source of the object `relative` below the URL (or of the URL itself for "").
    pub fn source(&self, relative: &str) -> FileSource {
        let path = if relative.is_empty() {
            self.base.clone()
        } else {
            self.path_of(relative)
        };
        let shown = if relative.is_empty() {
            self.shown.clone()
        } else {
            format!("{}/{relative}", self.shown.trim_end_matches('/'))
        };
        FileSource::Store {
            store: Arc::clone(&self.store),
            path,
            shown,
        }
    }

    /// Every object below the URL, with its path relative to it and its size; a listing that
    /// sends nothing for `stall` is abandoned.
    pub async fn list(&self, stall: Duration) -> Result<Vec<(RelativePath, u64)>, TransferError> {
        let mut listing = self
            .store
            .list(Some(&self.base))
            .map_err(|err| classify_store_error(&err));
        let mut objects = Vec::new();
        while let Some(object) = within(stall, async { listing.next().await.transpose() }).await? {
            objects.push(object);
        }
        let prefix = format!("{}/", self.base.as_ref());
        objects
            .into_iter()
            .map(|meta| {
                let full = meta.location.as_ref();
                let relative = full.strip_prefix(&prefix).unwrap_or(full);
                RelativePath::new(relative)
                    .map(|path| (path, meta.size))
                    .map_err(|err| TransferError::Fatal(format!("{}: {err}", self.shown)))
            })
            .collect()
    }

    /// The names of the "directories" right below the URL (common prefixes), sorted.
    pub async fn subdirectories(&self, stall: Duration) -> Result<Vec<String>, TransferError> {
        let listed = within(stall, async {
            self.store
                .list_with_delimiter(Some(&self.base))
                .await
                .map_err(|err| classify_store_error(&err))
        })
        .await?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename().map(str::to_owned))
            .collect();
        sort_versions(&mut names);
        Ok(names)
    }

    /// The object's size, or `None` when it does not exist.
    pub async fn size(&self, relative: &str) -> Result<Option<u64>, TransferError> {
        let path = if relative.is_empty() {
            self.base.clone()
        } else {
            self.path_of(relative)
        };
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(classify_store_error(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_store_urls_are_fetched_as_plain_https() {
        let presigned =
            Url::parse("https://bucket.s3.amazonaws.com/m/1/model.onnx?X-Amz-Signature=abc")
                .unwrap();
        assert!(is_plain_http(&presigned));
        let store = Url::parse("https://bucket.s3.amazonaws.com/m/1/model.onnx").unwrap();
        assert!(!is_plain_http(&store));
        assert!(is_plain_http(&Url::parse("https://host/m/1").unwrap()));
    }
}
