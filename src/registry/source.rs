//! Where one file's bytes come from, and how to read them starting at an offset (so that an
//! interrupted download resumes instead of starting over): HTTP (MLflow's artifact proxy, plain
//! HTTPS), an object store (S3, GCS, Azure) or the local filesystem.

use std::{
    fmt,
    future::Future,
    io::SeekFrom,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{GetOptions, GetRange, ObjectStore, path::Path as StorePath};
use reqwest::{StatusCode, header};
use tokio::io::AsyncSeekExt;
use url::Url;

use super::{redact::redact_url, relpath::UnsafePath};

/// Why reading a file failed, and whether trying again can help ([`TransferError::is_transient`]).
/// `Clone` because a retry loop keeps the last error: causes that are not `Clone` are in `Arc`s.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    /// Trouble worth retrying that no underlying error explains: a stall, a short body.
    #[error("{0}")]
    Transient(String),
    /// A refusal retrying cannot change that no underlying error explains: a limit, a link.
    #[error("{0}")]
    Fatal(String),
    /// A server answered with an error status: 429 and 5xx are worth retrying (after
    /// `retry_after` if the server said so), the others are final.
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// An error status that the server explained with a code and a message (MLflow's
    /// `error_code`, e.g. `RESOURCE_DOES_NOT_EXIST`).
    #[error("{status}: {code}: {message}")]
    Explained {
        #[source]
        status: Box<TransferError>,
        code: String,
        message: String,
    },
    /// A request that got no answer, or whose body broke off.
    #[error("{url}: {failure}")]
    Request {
        url: String,
        failure: RequestFailure,
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// An answer that is not the JSON asked for.
    #[error("{url}: unreadable answer")]
    Unreadable {
        url: String,
        /// A proxy may answer with an error page while the server restarts: worth retrying.
        transient: bool,
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// A small file (a sidecar, `MLmodel`) that is not text.
    #[error("{shown} is not UTF-8 text")]
    NotText {
        shown: String,
        #[source]
        source: Box<std::string::FromUtf8Error>,
    },
    /// The last transient error once the retries ran out.
    #[error("gave up after {retries} retries: {last}")]
    GaveUp {
        #[source]
        last: Box<TransferError>,
        retries: usize,
    },
    /// An object store refused the request (a missing object, refused credentials).
    #[error(transparent)]
    Store(Arc<object_store::Error>),
    /// An object store failed in a way worth retrying (transport errors, 5xx after its own
    /// retries).
    #[error(transparent)]
    StoreUnavailable(Arc<object_store::Error>),
    /// A store or client could not be set up from the URL and the environment.
    #[error(transparent)]
    Config(Arc<super::RegistryError>),
    /// A listing named a path that would leave the destination.
    #[error(transparent)]
    UnsafePath(#[from] UnsafePath),
    /// A local file could not be read.
    #[error("{}: {source}", path.display())]
    Local {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// The HTTP client could not be built (its TLS settings, say).
    #[error(transparent)]
    Client(Arc<reqwest::Error>),
    /// An `MLmodel` file that cannot be used.
    #[error(transparent)]
    MlModel(Arc<super::mlflow::MlModelError>),
    /// An MLflow `sha256` tag whose value is not a digest.
    #[error("{entity} tag '{key}': {source}")]
    Tag {
        entity: &'static str,
        key: String,
        source: Box<super::digest::DigestError>,
    },
    /// The registry has no such model version (MLflow's `RESOURCE_DOES_NOT_EXIST`); `versions`
    /// says which it has.
    #[error("{answer}; {versions}")]
    NotInRegistry {
        #[source]
        answer: Box<TransferError>,
        versions: String,
    },
}

/// How a request failed, as said to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    TimedOut,
    CannotConnect,
    Failed,
    BodyBrokeOff,
    /// The server's TLS certificate is not trusted: retrying cannot fix it.
    Untrusted,
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestFailure::TimedOut => "timed out",
            RequestFailure::CannotConnect => "cannot connect",
            RequestFailure::Failed => "request failed",
            RequestFailure::BodyBrokeOff => "the body broke off",
            RequestFailure::Untrusted => {
                "the server's certificate is not trusted (trust the server's CA with \
                 MLFLOW_TRACKING_SERVER_CERT_PATH, or skip verification with \
                 MLFLOW_TRACKING_INSECURE_TLS=true)"
            }
        })
    }
}

impl TransferError {
    pub(crate) fn local(path: &Path, source: std::io::Error) -> TransferError {
        TransferError::Local {
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn transient(message: impl ToString) -> TransferError {
        TransferError::Transient(message.to_string())
    }

    /// Nothing arrived for `stall`: an answer or the next bytes of a body.
    pub(crate) fn stalled(stall: Duration) -> TransferError {
        TransferError::transient(format!(
            "no bytes for {stall:?} (--fetch-stall-timeout); the transfer stalled"
        ))
    }

    /// Whether trying again can help.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            TransferError::Transient(_) | TransferError::StoreUnavailable(_) => true,
            TransferError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            TransferError::Explained { status, .. } => status.is_transient(),
            TransferError::Request { failure, .. } => *failure != RequestFailure::Untrusted,
            TransferError::Unreadable { transient, .. } => *transient,
            _ => false,
        }
    }

    /// How long the server asked to wait before the next try.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            TransferError::Status { retry_after, .. } => *retry_after,
            TransferError::Explained { status, .. } => status.retry_after(),
            _ => None,
        }
    }

    /// The code a server explained its refusal with (MLflow's `error_code`).
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            TransferError::Explained { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A request failed: `url` is shown redacted, and reqwest's error without it (its own
    /// would repeat the URL, credentials included).
    pub(crate) fn request(url: &Url, failure: RequestFailure, source: reqwest::Error) -> Self {
        TransferError::Request {
            url: redact_url(url),
            failure,
            source: Arc::new(source.without_url()),
        }
    }
}

impl From<super::RegistryError> for TransferError {
    fn from(err: super::RegistryError) -> TransferError {
        TransferError::Config(Arc::new(err))
    }
}

impl From<super::mlflow::MlModelError> for TransferError {
    fn from(err: super::mlflow::MlModelError) -> TransferError {
        TransferError::MlModel(Arc::new(err))
    }
}

/// Runs `work` (a request, or the wait for the next bytes) unless it stays silent for `stall`.
pub(crate) async fn within<T>(
    stall: Duration,
    work: impl Future<Output = Result<T, TransferError>>,
) -> Result<T, TransferError> {
    tokio::time::timeout(stall, work)
        .await
        .map_err(|_| TransferError::stalled(stall))?
}

/// An open read: the offset the bytes start at (0 when the server ignored a range request),
/// how many bytes the source announces from there, and the bytes.
pub(crate) struct Opened {
    pub(crate) offset: u64,
    pub(crate) length: Option<u64>,
    pub(crate) bytes: BoxStream<'static, Result<Bytes, TransferError>>,
}

impl Opened {
    /// Reads the whole body into memory, refusing it as soon as it is known to exceed `limit`
    /// bytes (from its announced length, or at the limit plus one byte), so a hostile source
    /// cannot make pinserve hold more than the limit.
    pub(crate) async fn read_limited(
        self,
        limit: usize,
        stall: Duration,
        shown: &dyn fmt::Display,
    ) -> Result<Vec<u8>, TransferError> {
        let too_large = || {
            TransferError::Fatal(format!(
                "{shown} is larger than {limit} bytes, the limit for it; refusing to read it"
            ))
        };
        if self.length.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        let mut bytes = self.bytes;
        while let Some(chunk) = within(stall, async { bytes.next().await.transpose() }).await? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[derive(Clone)]
pub(crate) enum FileSource {
    Http {
        client: reqwest::Client,
        url: Url,
    },
    Store {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
        shown: String,
    },
    Local(PathBuf),
}

impl fmt::Display for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileSource::Http { url, .. } => f.write_str(&redact_url(url)),
            FileSource::Store { shown, .. } => f.write_str(shown),
            FileSource::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileSource({self})")
    }
}

impl FileSource {
    pub(crate) async fn open(&self, offset: u64) -> Result<Opened, TransferError> {
        match self {
            FileSource::Http { client, url } => open_http(client, url, offset).await,
            FileSource::Store { store, path, .. } => open_store(store.as_ref(), path, offset).await,
            FileSource::Local(path) => open_local(path, offset).await,
        }
    }
}

async fn open_http(
    client: &reqwest::Client,
    url: &Url,
    offset: u64,
) -> Result<Opened, TransferError> {
    let mut request = client.get(url.clone());
    if offset > 0 {
        request = request.header(header::RANGE, format!("bytes={offset}-"));
    }
    let response = request
        .send()
        .await
        .map_err(|err| describe_reqwest(url, err))?;
    check_status(url, &response)?;
    let offset = match response.status() {
        StatusCode::PARTIAL_CONTENT => offset,
        _ => 0,
    };
    let length = response.content_length();
    let url = url.clone();
    let bytes = response
        .bytes_stream()
        .map_err(move |err| TransferError::request(&url, RequestFailure::BodyBrokeOff, err))
        .boxed();
    Ok(Opened {
        offset,
        length,
        bytes,
    })
}

/// Maps an HTTP status to success or a [`TransferError::Status`], which says whether it is
/// worth retrying.
pub(crate) fn check_status(url: &Url, response: &reqwest::Response) -> Result<(), TransferError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .map(Duration::from_secs);
    Err(TransferError::Status {
        url: redact_url(url),
        status,
        retry_after,
    })
}

/// Connection errors and timeouts are transient, except an untrusted TLS certificate, which
/// retrying cannot fix.
pub(crate) fn describe_reqwest(url: &Url, err: reqwest::Error) -> TransferError {
    let mut untrusted = false;
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        untrusted |= cause.to_string().contains("certificate");
        source = cause.source();
    }
    let failure = if untrusted {
        RequestFailure::Untrusted
    } else if err.is_timeout() {
        RequestFailure::TimedOut
    } else if err.is_connect() {
        RequestFailure::CannotConnect
    } else {
        RequestFailure::Failed
    };
    TransferError::request(url, failure, err)
}

async fn open_store(
    store: &dyn ObjectStore,
    path: &StorePath,
    offset: u64,
) -> Result<Opened, TransferError> {
    let options = GetOptions {
        range: (offset > 0).then_some(GetRange::Offset(offset)),
        ..GetOptions::default()
    };
    let result = store
        .get_opts(path, options)
        .await
        .map_err(classify_store_error)?;
    let offset = result.range.start;
    let length = Some(result.range.end - result.range.start);
    let bytes = result.into_stream().map_err(classify_store_error).boxed();
    Ok(Opened {
        offset,
        length,
        bytes,
    })
}

/// Object-store errors that name a missing object or refused credentials are final; the rest
/// (transport errors, 5xx after the store's own retries) are transient.
pub(crate) fn classify_store_error(err: object_store::Error) -> TransferError {
    use object_store::Error;
    match err {
        Error::NotFound { .. }
        | Error::PermissionDenied { .. }
        | Error::Unauthenticated { .. }
        | Error::InvalidPath { .. }
        | Error::NotSupported { .. }
        | Error::NotImplemented { .. }
        | Error::UnknownConfigurationKey { .. } => TransferError::Store(Arc::new(err)),
        _ if answered_refusal(&err.to_string()) => TransferError::Store(Arc::new(err)),
        _ => TransferError::StoreUnavailable(Arc::new(err)),
    }
}

/// Whether a store's error message reports an HTTP status that retrying cannot change (a 4xx
/// other than 408 and 429, or 501). object_store keeps the status inside a private error type,
/// so its message ("... status code: 403 Forbidden ...") is where it can be read.
fn answered_refusal(message: &str) -> bool {
    const MARKER: &str = "status code: ";
    let Some(at) = message.find(MARKER) else {
        return false;
    };
    let code: String = message[at + MARKER.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    matches!(code.parse::<u16>(), Ok(400..=499 | 501) if !matches!(code.as_str(), "408" | "429"))
}

async fn open_local(path: &Path, offset: u64) -> Result<Opened, TransferError> {
    let local_error = |err| TransferError::local(path, err);
    let mut file = tokio::fs::File::open(path).await.map_err(local_error)?;
    let size = file.metadata().await.map_err(local_error)?.len();
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(local_error)?;
    let path = path.to_path_buf();
    let bytes = tokio_util::io::ReaderStream::new(file)
        .map_err(move |err| TransferError::local(&path, err))
        .boxed();
    Ok(Opened {
        offset,
        length: Some(size.saturating_sub(offset)),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{
        RegistryError,
        redact::error_chain,
        retry::{RetryPolicy, gave_up},
    };

    /// A refused connection, given up on and reported as a registry failure: reqwest's error
    /// stays the source, so its cause reaches the one-line chain that the log and `/health`
    /// show, with the URL's credentials masked.
    #[tokio::test]
    async fn a_request_failure_keeps_its_cause_up_to_the_error_chain() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = Url::parse(&format!(
            "http://alice:hunter2@127.0.0.1:{port}/api?token=t0k"
        ))
        .unwrap();
        let failed = reqwest::get(url.clone()).await.unwrap_err();
        let err = RegistryError::Registry {
            reference: "models:/m/1".to_owned(),
            registry: redact_url(&url),
            source: gave_up(describe_reqwest(&url, failed), &RetryPolicy::new(0)),
        };
        let mut causes =
            std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |err| {
                err.source()
            });
        assert!(
            causes.any(|cause| cause.is::<Arc<reqwest::Error>>()),
            "{err:?}"
        );
        let chain = error_chain(&err);
        assert!(chain.starts_with(&err.to_string()), "{chain}");
        assert!(chain.contains("cannot connect"), "{chain}");
        assert!(chain.contains("gave up after 0 retries"), "{chain}");
        assert!(
            chain.to_lowercase().contains("connection refused"),
            "{chain}"
        );
        assert!(
            !chain.contains("hunter2") && !chain.contains("t0k"),
            "{chain}"
        );
    }

    #[test]
    fn refusals_in_store_messages_are_final_and_overload_is_not() {
        let message = |code: &str| {
            format!(
                "Error performing GET http://h/b?list in 2ms - Server returned non-2xx status code: {code}: "
            )
        };
        assert!(answered_refusal(&message("403 Forbidden")));
        assert!(answered_refusal(&message("501 Not Implemented")));
        assert!(!answered_refusal(&message("503 Service Unavailable")));
        assert!(!answered_refusal(&message("429 Too Many Requests")));
        assert!(!answered_refusal("connection reset by peer"));
    }
}
