//! The HTTP client for a tracking server: MLflow's auth and TLS variables, and JSON reads that
//! retry transient failures and carry MLflow's error code into the message.

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::registry::{
    RegistryError,
    redact::redact_url,
    retry::{RetryPolicy, with_retries},
    source::{Opened, RequestFailure, TransferError, check_status, describe_reqwest, within},
};

/// Metadata calls are small; a registry that does not answer one in this time is down.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// MLflow's error code for a model or version that does not exist.
pub(super) const MISSING: &str = "RESOURCE_DOES_NOT_EXIST";
/// The largest API answer read: a listing of tens of thousands of files fits; a registry that
/// sends more is broken or hostile, and is not allowed to fill the fetcher's memory.
pub(super) const ANSWER_LIMIT: usize = 16 << 20;
/// An error answer is a code and a message.
const ERROR_LIMIT: usize = 64 << 10;

pub(crate) struct MlflowClient {
    pub(super) http: reqwest::Client,
    tracking: Url,
    pub(super) retry: RetryPolicy,
    /// `--fetch-stall-timeout`: how long an answer may keep pinserve waiting for its next bytes.
    pub(super) stall: Duration,
}

/// Why a client for the tracking server could not be built; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("credentials contain invalid characters")]
    Credentials(#[source] reqwest::header::InvalidHeaderValue),
    #[error("{}: {source}", path.display())]
    ReadCertificates {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Certificates(#[source] reqwest::Error),
    #[error("{0}")]
    Build(#[source] reqwest::Error),
}

/// An MLflow error answer: a code such as `RESOURCE_DOES_NOT_EXIST`, and a message.
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) error_code: String,
    #[serde(default)]
    pub(super) message: String,
}

impl MlflowClient {
    /// A client for the tracking server at `tracking`, with MLflow's auth and TLS variables.
    pub(crate) fn from_env(
        tracking: Url,
        retry: RetryPolicy,
        stall: Duration,
    ) -> Result<MlflowClient, RegistryError> {
        let http = http_client(&tracking)?;
        let mut tracking = tracking;
        let _ = tracking.set_username("");
        let _ = tracking.set_password(None);
        Ok(MlflowClient {
            http,
            tracking,
            retry,
            stall,
        })
    }

    pub(crate) fn tracking(&self) -> &Url {
        &self.tracking
    }

    pub(super) fn endpoint(&self, path: &str) -> Url {
        let mut url = self.tracking.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{path}"));
        url
    }

    /// GETs a JSON API endpoint, retrying transient failures; MLflow's error bodies become
    /// messages naming the registry and the `error_code`.
    pub(super) async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, TransferError> {
        let mut url = self.endpoint(path);
        url.query_pairs_mut().extend_pairs(query);
        with_retries(&self.retry, path, || async {
            let request = self.http.get(url.clone()).timeout(METADATA_TIMEOUT).send();
            let response = within(self.stall, async {
                request.await.map_err(|err| describe_reqwest(&url, err))
            })
            .await?;
            if let Err(err) = check_status(&url, &response) {
                return Err(with_mlflow_error(err, response).await);
            }
            let shown = redact_url(&url);
            let body = answer(response)
                .read_limited(ANSWER_LIMIT, self.stall, &shown)
                .await?;
            serde_json::from_slice(&body).map_err(|err| TransferError::Unreadable {
                url: shown,
                transient: true,
                source: Arc::new(err),
            })
        })
        .await
    }
}

/// The HTTP client with MLflow's credentials as default headers and its TLS settings.
fn http_client(tracking: &Url) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .default_headers(auth_headers(tracking)?);
    if env_flag("MLFLOW_TRACKING_INSECURE_TLS") {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    if let Some(path) =
        std::env::var_os("MLFLOW_TRACKING_SERVER_CERT_PATH").filter(|p| !p.is_empty())
    {
        let path = PathBuf::from(path);
        let pem = std::fs::read(&path)
            .map_err(|source| ClientError::ReadCertificates { path, source })?;
        for certificate in
            reqwest::Certificate::from_pem_bundle(&pem).map_err(ClientError::Certificates)?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(ClientError::Build)
}

/// An API answer's body, as a read that can be bounded.
pub(super) fn answer(response: reqwest::Response) -> Opened {
    let url = response.url().clone();
    Opened {
        offset: 0,
        length: response.content_length(),
        bytes: response
            .bytes_stream()
            .map_err(move |err| TransferError::request(&url, RequestFailure::BodyBrokeOff, err))
            .boxed(),
    }
}

/// Adds MLflow's error code and message to a refusal, e.g. `RESOURCE_DOES_NOT_EXIST`.
async fn with_mlflow_error(err: TransferError, response: reqwest::Response) -> TransferError {
    let Ok(body) = answer(response)
        .read_limited(ERROR_LIMIT, METADATA_TIMEOUT, &"the error answer")
        .await
    else {
        return err;
    };
    let Ok(body) = serde_json::from_slice::<ErrorBody>(&body) else {
        return err;
    };
    TransferError::Explained {
        status: Box::new(err),
        code: body.error_code,
        message: body.message,
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|value| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Basic auth from MLflow's variables (or the tracking URL's userinfo), else a bearer token.
fn auth_headers(tracking: &Url) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    let basic = match (
        non_empty_env("MLFLOW_TRACKING_USERNAME"),
        non_empty_env("MLFLOW_TRACKING_PASSWORD"),
    ) {
        (Some(user), Some(password)) => Some((user, password)),
        _ if !tracking.username().is_empty() => Some((
            tracking.username().to_owned(),
            tracking.password().unwrap_or_default().to_owned(),
        )),
        _ => None,
    };
    let value = match (basic, non_empty_env("MLFLOW_TRACKING_TOKEN")) {
        (Some((user, password)), _) => {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {encoded}"))
        }
        (None, Some(token)) => Some(format!("Bearer {token}")),
        (None, None) => None,
    };
    if let Some(value) = value {
        let mut value = HeaderValue::from_str(&value).map_err(ClientError::Credentials)?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_wins_over_a_token_and_userinfo_counts_as_basic() {
        let tracking = Url::parse("https://alice:pw@mlflow.example").unwrap();
        let headers = auth_headers(&tracking).unwrap();
        let value = headers[AUTHORIZATION].to_str().unwrap();
        assert_eq!(
            value,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:pw")
            )
        );
        assert!(headers[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn a_client_error_reads_as_a_configuration_error_of_the_client() {
        let bad = HeaderValue::from_str("Bearer a\nb").unwrap_err();
        let err = RegistryError::from(ClientError::Credentials(bad));
        assert_eq!(
            err.to_string(),
            "MLflow client: credentials contain invalid characters"
        );
    }
}
