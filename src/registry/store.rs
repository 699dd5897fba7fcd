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
    reference::sort_versions,
    relpath::RelativePath,
    source::{FileSource, TransferError, classify_store_error, within},
};

/// Per-request bound for object-store requests, bodies included: far beyond any download, which
/// --fetch-timeout bounds as a whole (object_store's own default of 30 s would cut off large
/// models).
const REQUEST_TIMEOUT: &str = "24h";

/// How stores are reached beyond what the URL and the environment say.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreOptions {
    /// An S3-compatible endpoint (MinIO, Ceph, a local emulator), or a GCS or Azure one.
    pub(crate) endpoint: Option<Url>,
}

/// `--storage-endpoint` is not an HTTP(S) URL.
#[derive(Debug, thiserror::Error)]
#[error("'{value}' is not an http:// or https:// URL: {reason}")]
pub(crate) struct EndpointError {
    value: String,
    reason: String,
}

/// Parses `--storage-endpoint`: an `http://` or `https://` URL.
pub(crate) fn parse_endpoint(text: &str) -> Result<Url, EndpointError> {
    let refused = |reason: String| EndpointError {
        value: text.to_owned(),
        reason,
    };
    let url = Url::parse(text).map_err(|err| refused(err.to_string()))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        "http" | "https" => Err(refused("it names no host".to_owned())),
        other => Err(refused(format!("its scheme is {other}"))),
    }
}

/// What the three cloud builders share, each under its own configuration key type.
trait CloudBuilder {
    fn with_url(self, url: &str) -> Self;
    fn with_retry(self, retry: RetryConfig) -> Self;
    fn with_client(self, key: ClientConfigKey, value: &str) -> Self;
    fn with_endpoint(self, endpoint: &str) -> Self;
    fn build(self) -> object_store::Result<Arc<dyn ObjectStore>>;
}

macro_rules! cloud_builder {
    ($builder:ty, $key:ident, $endpoint:ident) => {
        impl CloudBuilder for $builder {
            fn with_url(self, url: &str) -> Self {
                <$builder>::with_url(self, url)
            }
            fn with_retry(self, retry: RetryConfig) -> Self {
                <$builder>::with_retry(self, retry)
            }
            fn with_client(self, key: ClientConfigKey, value: &str) -> Self {
                self.with_config($key::Client(key), value)
            }
            fn with_endpoint(self, endpoint: &str) -> Self {
                self.with_config($key::$endpoint, endpoint)
            }
            fn build(self) -> object_store::Result<Arc<dyn ObjectStore>> {
                Ok(Arc::new(<$builder>::build(self)?))
            }
        }
    };
}

cloud_builder!(AmazonS3Builder, AmazonS3ConfigKey, Endpoint);
cloud_builder!(GoogleCloudStorageBuilder, GoogleConfigKey, BaseUrl);
cloud_builder!(MicrosoftAzureBuilder, AzureConfigKey, Endpoint);

/// A cloud store at `url`, its credentials from the environment, reached at `endpoint` when one
/// is given. One retry policy (pinserve's) governs every fetch, and large objects must not hit a
/// whole-request timeout: stalls are caught per chunk, and --fetch-timeout bounds the whole.
/// Both are set key by key, so the client settings the environment gives (such as
/// AZURE_ALLOW_HTTP) stay in force.
fn open_cloud(
    builder: impl CloudBuilder,
    url: &Url,
    endpoint: Option<&Url>,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    let mut builder = builder
        .with_url(url.as_str())
        .with_client(ClientConfigKey::Timeout, REQUEST_TIMEOUT)
        .with_retry(no_retries());
    if let Some(endpoint) = endpoint {
        let allow_http = endpoint.scheme() == "http";
        builder = builder
            .with_endpoint(endpoint.as_str().trim_end_matches('/'))
            .with_client(ClientConfigKey::AllowHttp, &allow_http.to_string());
    }
    builder.build()
}

/// A WebDAV-style HTTP server, whose bodies may take as long as --fetch-timeout allows.
fn open_http(url: &Url) -> object_store::Result<Arc<dyn ObjectStore>> {
    let store = HttpBuilder::new()
        .with_url(&url[..url::Position::BeforePath])
        .with_client_options(
            ClientOptions::new()
                .with_timeout_disabled()
                .with_allow_http(true),
        )
        .with_retry(no_retries())
        .build()?;
    Ok(Arc::new(store))
}

/// pinserve retries on its own ([`super::retry`]); the store clients must not retry as well.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

/// An object store and the path a URL points at inside it.
pub(crate) struct Store {
    store: Arc<dyn ObjectStore>,
    base: StorePath,
    shown: String,
}

/// Whether `url` is served by a plain HTTP(S) server rather than a recognised object store. An
/// HTTPS URL with a query string (a presigned S3 or GCS URL, a SAS URL) is fetched as it is:
/// its query is the credential, which a store client would drop in favour of its own.
pub(crate) fn is_plain_http(url: &Url) -> bool {
    let presigned = matches!(url.scheme(), "http" | "https") && url.query().is_some();
    presigned
        || matches!(
            ObjectStoreScheme::parse(url),
            Ok((ObjectStoreScheme::Http, _))
        )
}

impl Store {
    pub(crate) fn open(url: &Url, options: &StoreOptions) -> Result<Store, RegistryError> {
        let shown = redact_url(url);
        let config = |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Store {
            location: shown.clone(),
            source,
        };
        let (scheme, base) = ObjectStoreScheme::parse(url).map_err(|err| config(Box::new(err)))?;
        let endpoint = options.endpoint.as_ref();
        let store = match scheme {
            ObjectStoreScheme::AmazonS3 => open_cloud(AmazonS3Builder::from_env(), url, endpoint),
            ObjectStoreScheme::GoogleCloudStorage => {
                open_cloud(GoogleCloudStorageBuilder::from_env(), url, endpoint)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                open_cloud(MicrosoftAzureBuilder::from_env(), url, endpoint)
            }
            ObjectStoreScheme::Http => open_http(url),
            ObjectStoreScheme::Local => {
                Ok(Arc::new(LocalFileSystem::new()) as Arc<dyn ObjectStore>)
            }
            other => {
                return Err(RegistryError::UnsupportedStore {
                    location: shown.clone(),
                    scheme: format!("{other:?}"),
                });
            }
        }
        .map_err(|err| config(Box::new(err)))?;
        Ok(Store { store, base, shown })
    }

    fn path_of(&self, relative: &str) -> StorePath {
        relative
            .split('/')
            .fold(self.base.clone(), |path, segment| path.join(segment))
    }

    /// The source of the object `relative` below the URL (or of the URL itself for "").
    pub(crate) fn source(&self, relative: &str) -> FileSource {
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
    pub(crate) async fn list(
        &self,
        stall: Duration,
    ) -> Result<Vec<(RelativePath, u64)>, TransferError> {
        let mut listing = self
            .store
            .list(Some(&self.base))
            .map_err(classify_store_error);
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
                Ok((RelativePath::new(relative)?, meta.size))
            })
            .collect()
    }

    /// The names of the "directories" right below the URL (common prefixes), sorted.
    pub(crate) async fn subdirectories(
        &self,
        stall: Duration,
    ) -> Result<Vec<String>, TransferError> {
        let listed = within(stall, async {
            self.store
                .list_with_delimiter(Some(&self.base))
                .await
                .map_err(classify_store_error)
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
    pub(crate) async fn size(&self, relative: &str) -> Result<Option<u64>, TransferError> {
        let path = if relative.is_empty() {
            self.base.clone()
        } else {
            self.path_of(relative)
        };
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(classify_store_error(err)),
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

    #[test]
    fn the_storage_endpoint_is_an_http_url_and_a_bad_one_is_named() {
        let endpoint = parse_endpoint("http://127.0.0.1:9000").unwrap();
        assert_eq!(endpoint.scheme(), "http");
        for bad in ["127.0.0.1:9000", "s3://bucket", "localhost", "http://"] {
            let err = parse_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }
}
