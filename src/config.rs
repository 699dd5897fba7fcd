//! Command line and environment. Every flag can also be set through a `PINSERVE_*` variable, so
//! a Kubernetes manifest configures pinserve with `env:` entries alone.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use url::Url;

use crate::{
    batch::BatchConfig,
    drift::DriftConfig,
    http::server::ConnectionLimits,
    model::{Device, GraphOptimization, SessionOptions, runtime},
    promote::ForgeKind,
    registry::{
        Digest, FetchOptions, Location, ModelReference, RegistryError, Resolver, Selector,
        cache::{Cache, Limits},
        check_component,
        digest::DigestError,
        retry::RetryPolicy,
        store::{StoreOptions, parse_endpoint},
    },
    signing::{Policy, SigningError},
};

#[derive(Debug, Parser)]
#[command(
    name = "pinserve",
    version,
    about = "Serve one pinned ONNX model version over the Open Inference Protocol",
    long_about = "Serve one pinned ONNX model version over the Open Inference Protocol (KServe V2 / \
                  Triton REST) and /predict, with readiness that turns green only after the model \
                  has loaded and answered a warm-up inference, and Prometheus metrics labelled by \
                  model version for canary analysis."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one model version over HTTP: from a model repository, a registry, or a directory
    /// `pinserve fetch` filled.
    Serve(Box<ServeConfig>),
    /// Resolve, download and verify a model version into a directory, then exit (the init
    /// container of a Kubernetes pod).
    Fetch(Box<FetchConfig>),
    /// Print a model's inputs and outputs (name, datatype, shape; -1 marks a dynamic dimension).
    Inspect(InspectArgs),
    /// Register an ONNX model in the MLflow Model Registry (a run, a logged model and a model
    /// version tagged with the file's sha256), without MLflow's Python package; prints the new
    /// version.
    Register(RegisterConfig),
    /// Pin a model version (and its digest) in a k8s/services overlay, and optionally commit,
    /// push and open a pull request for it.
    Promote(Box<PromoteConfig>),
    /// Evaluate a model version on held-out data through the serving path, against a baseline,
    /// and judge it with a gate: exit 0 passed, 3 failed, 1 error, 2 usage.
    Eval(Box<EvalConfig>),
    /// Summarise the data a model was trained on, and its predictions there, as the reference
    /// profile that serving compares live traffic with (drift).
    Profile(Box<ProfileConfig>),
}

const MODEL: &str = "Model";
const FETCH: &str = "Fetching";
const HTTP: &str = "HTTP";
const LOGGING: &str = "Logging";

/// Which model version to serve or fetch.
#[derive(Debug, Clone, Args)]
pub(crate) struct ModelSource {
    /// The model: models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/STAGE (MLflow Model
    /// Registry), or a version directory or model file as a path or file://, s3://, gs://,
    /// az:// or https:// URL (named by its last two directories unless --model and --version
    /// say otherwise).
    #[arg(long, env = "PINSERVE_MODEL_URI", value_name = "URI", help_heading = MODEL)]
    model_uri: Option<String>,

    /// Model repository root (a path, or a file://, s3://, gs://, az:// or https:// URL), laid
    /// out ROOT/NAME/VERSION/model.onnx as Triton and TF Serving lay theirs out.
    #[arg(
        long,
        env = "PINSERVE_MODEL_REPOSITORY",
        value_name = "ROOT",
        conflicts_with = "model_uri",
        help_heading = MODEL
    )]
    model_repository: Option<String>,

    /// MLflow tracking server holding the Model Registry, for models:/ URIs and for --model
    /// with --version when no repository is given [default: MLFLOW_TRACKING_URI].
    #[arg(long, env = "PINSERVE_REGISTRY_URI", value_name = "URL", help_heading = MODEL)]
    pub(crate) registry_uri: Option<String>,

    /// Name of the model (a directory in the repository, or a registered model).
    #[arg(
        long = "model-name",
        visible_alias = "model",
        env = "PINSERVE_MODEL_NAME",
        value_name = "NAME",
        help_heading = MODEL
    )]
    pub(crate) model_name: Option<String>,

    /// Version of the model. Pin it: the version is what /health, the v2 metadata and every
    /// metric's `version` label report.
    #[arg(
        long = "model-version",
        visible_alias = "version",
        env = "PINSERVE_MODEL_VERSION",
        value_name = "VERSION",
        help_heading = MODEL
    )]
    pub(crate) model_version: Option<String>,
}

impl ModelSource {
    /// The reference these flags describe.
    pub(crate) fn reference(&self) -> Result<ModelReference, RegistryError> {
        let tracking = self.tracking_uri()?;
        let name = self.model_name.as_deref();
        let version = self.model_version.as_deref();
        if let Some(uri) = &self.model_uri {
            return ModelReference::parse(uri, name, version, tracking.as_ref());
        }
        let (Some(name), Some(version)) = (name, version) else {
            if let Some(name) = name {
                return Err(RegistryError::Config(format!(
                    "--version is missing: --model {name} needs --version V, the version to serve \
                     (what /health and every metric report)"
                )));
            }
            if let Some(version) = version {
                return Err(RegistryError::Config(format!(
                    "--model is missing: --version {version} needs --model NAME"
                )));
            }
            return Err(RegistryError::Config(
                "say which model to serve: --model-uri URI, --model-repository ROOT with --model and \
                 --version, --registry-uri (or MLFLOW_TRACKING_URI) with --model and --version, or \
                 --model-dir DIR"
                    .to_owned(),
            ));
        };
        check_component("name", name)?;
        check_component("version", version)?;
        if let Some(root) = &self.model_repository {
            return Ok(ModelReference::Repository {
                root: Location::parse(root)?,
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        let tracking = tracking.ok_or_else(|| {
            RegistryError::Config(format!(
                "--model {name} --version {version}: give --model-repository, or a registry with \
                 --registry-uri or MLFLOW_TRACKING_URI"
            ))
        })?;
        Ok(ModelReference::Registry {
            tracking,
            name: name.to_owned(),
            selector: Selector::Version(version.to_owned()),
        })
    }

    fn tracking_uri(&self) -> Result<Option<Url>, RegistryError> {
        tracking_uri(self.registry_uri.as_deref())
    }
}

/// `--registry-uri`, else MLflow's own `MLFLOW_TRACKING_URI`, as MLflow clients read it; every
/// command that talks to MLflow finds it here.
pub(crate) fn tracking_uri(registry_uri: Option<&str>) -> Result<Option<Url>, RegistryError> {
    let text = registry_uri
        .map(str::to_owned)
        .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok())
        .filter(|text| !text.is_empty());
    text.map(|text| {
        Url::parse(&text).map_err(|err| RegistryError::InvalidReference {
            reference: "the registry URI".to_owned(),
            reason: err.to_string(),
        })
    })
    .transpose()
}

/// How downloads are verified, retried and bounded.
#[derive(Debug, Clone, Args)]
pub(crate) struct FetchArgs {
    /// The model file's expected SHA-256 (hex), pinned in the manifest. It takes precedence over
    /// an MLflow `sha256` model-version tag and a `model.onnx.sha256` sidecar. Empty means not
    /// pinned, as the base manifest's `--model-sha256=$(MODEL_SHA256)` passes it.
    #[arg(long, env = "PINSERVE_MODEL_SHA256", value_name = "HEX", value_parser = parse_optional_digest, help_heading = FETCH)]
    pub(crate) model_sha256: Option<OptionalDigest>,

    /// Retries of a failed request (connection errors, timeouts, 429, 5xx, stalled bodies).
    #[arg(long, env = "PINSERVE_FETCH_RETRIES", default_value_t = 5, value_name = "N", help_heading = FETCH)]
    pub(crate) fetch_retries: usize,

    /// Bound on the whole fetch, retries included (e.g. 600, 10m, 1h).
    #[arg(
        long,
        env = "PINSERVE_FETCH_TIMEOUT",
        default_value = "30m",
        value_parser = parse_duration,
        value_name = "DURATION",
        help_heading = FETCH
    )]
    fetch_timeout: Duration,

    /// A download that receives no bytes for this long is abandoned and resumed (e.g. 30s).
    #[arg(
        long,
        env = "PINSERVE_FETCH_STALL_TIMEOUT",
        default_value = "30s",
        value_parser = parse_duration,
        value_name = "DURATION",
        help_heading = FETCH
    )]
    pub(crate) fetch_stall_timeout: Duration,

    /// Largest file fetched whose size the source does not list (a model.onnx over plain HTTPS),
    /// in bytes; a longer body is refused and nothing is kept. The default, 2 GiB, is the most
    /// an ONNX file can hold (protobuf's limit); larger weights are external-data files, which
    /// object stores and MLflow list with their sizes.
    #[arg(long, env = "PINSERVE_FETCH_MAX_BYTES", default_value_t = 2 << 30, value_name = "BYTES", help_heading = FETCH)]
    fetch_max_bytes: u64,

    /// Endpoint of an S3-compatible store (MinIO, Ceph) or of an Azure emulator.
    #[arg(long, env = "PINSERVE_STORAGE_ENDPOINT", value_name = "URL", value_parser = parse_endpoint, help_heading = FETCH)]
    storage_endpoint: Option<Url>,

    #[command(flatten)]
    pub(crate) signing: SignatureArgs,
}

const SIGNING: &str = "Model signatures";

/// Who must have signed the model version (OpenSSF `model_signing`'s format). With a key, a
/// certificate chain or a Sigstore trust root given, a version directory whose files are not
/// exactly the signed ones is refused; without any, signatures are not looked at.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("certificate_trust").args(["signature_certificate_chain", "sigstore_trust_root"]))]
pub(crate) struct SignatureArgs {
    /// The signer's public key (PEM; ECDSA P-256, P-384 or P-521), as `model_signing sign key`
    /// signs with its private half.
    #[arg(long, env = "PINSERVE_SIGNATURE_PUBLIC_KEY", value_name = "PEM", conflicts_with_all = ["signature_certificate_chain", "sigstore_trust_root"], help_heading = SIGNING)]
    signature_public_key: Option<PathBuf>,

    /// Certificates (PEM) trusted to issue the signing certificate of `model_signing sign
    /// certificate`; the bundle carries the signing certificate and its intermediates.
    #[arg(long, env = "PINSERVE_SIGNATURE_CERTIFICATE_CHAIN", value_name = "PEM", conflicts_with = "sigstore_trust_root", help_heading = SIGNING)]
    signature_certificate_chain: Option<PathBuf>,

    /// A Sigstore trust root (`trusted_root.json`: Fulcio CAs, Rekor, CT log and timestamp
    /// keys) for keyless signatures (`model_signing sign sigstore`), verified offline.
    #[arg(long, env = "PINSERVE_SIGSTORE_TRUST_ROOT", value_name = "JSON", requires_all = ["signature_identity", "signature_oidc_issuer"], help_heading = SIGNING)]
    sigstore_trust_root: Option<PathBuf>,

    /// The identity the signing certificate must name (a subject alternative name: e-mail,
    /// URI or DNS name; the subject when it has none). Required for keyless signatures.
    #[arg(long, env = "PINSERVE_SIGNATURE_IDENTITY", value_name = "NAME", requires = "certificate_trust", help_heading = SIGNING)]
    signature_identity: Option<String>,

    /// The OIDC issuer the keyless signer logged in at (e.g.
    /// `https://token.actions.githubusercontent.com`).
    #[arg(long, env = "PINSERVE_SIGNATURE_OIDC_ISSUER", value_name = "URL", requires = "sigstore_trust_root", help_heading = SIGNING)]
    signature_oidc_issuer: Option<String>,

    /// The signature bundle's path within the version directory.
    #[arg(long, env = "PINSERVE_SIGNATURE_FILE", value_name = "NAME", default_value = "model.sig", help_heading = SIGNING)]
    pub(crate) signature_file: String,
}

impl SignatureArgs {
    /// The signature policy, reading the key, certificates or trust root; `None` when none is
    /// given.
    pub(crate) fn policy(&self) -> Result<Option<Policy>, SigningError> {
        let file = self.signature_file.clone();
        let identity = self.signature_identity.clone();
        if let Some(key) = &self.signature_public_key {
            return Policy::with_key(file, key).map(Some);
        }
        if let Some(chain) = &self.signature_certificate_chain {
            return Policy::with_chain(file, chain, identity).map(Some);
        }
        let Some(root) = &self.sigstore_trust_root else {
            return Ok(None);
        };
        let issuer = self.signature_oidc_issuer.as_deref().unwrap_or_default();
        Policy::with_trust_root(file, root, &identity.unwrap_or_default(), issuer).map(Some)
    }
}

/// `--model-sha256`'s value: a digest, or nothing for an empty value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OptionalDigest(Option<Digest>);

fn parse_optional_digest(text: &str) -> Result<OptionalDigest, DigestError> {
    if text.trim().is_empty() {
        return Ok(OptionalDigest(None));
    }
    text.parse().map(|digest| OptionalDigest(Some(digest)))
}

impl FetchArgs {
    /// The digest `--model-sha256` pins, if any.
    pub(crate) fn model_sha256(&self) -> Option<Digest> {
        self.model_sha256.and_then(|digest| digest.0)
    }

    /// The same settings, pinning `digest` instead (another model of the same command).
    pub(crate) fn pinning(&self, digest: Option<Digest>) -> FetchArgs {
        FetchArgs {
            model_sha256: Some(OptionalDigest(digest)),
            ..self.clone()
        }
    }

    pub(crate) fn resolver(&self) -> Resolver {
        Resolver {
            retry: RetryPolicy::new(self.fetch_retries),
            store: StoreOptions {
                endpoint: self.storage_endpoint.clone(),
            },
            model_sha256: self.model_sha256(),
            stall_timeout: self.fetch_stall_timeout,
        }
    }

    /// How to fetch a model version, its signing policy included (reading its key,
    /// certificates or trust root).
    pub(crate) fn options(&self) -> Result<FetchOptions, SigningError> {
        Ok(FetchOptions {
            signing: self.signing.policy()?,
            ..self.transfer_options()
        })
    }

    /// How to fetch files that are no model version (held-out data): no signing policy.
    pub(crate) fn transfer_options(&self) -> FetchOptions {
        FetchOptions {
            retry: RetryPolicy::new(self.fetch_retries),
            timeout: self.fetch_timeout,
            stall_timeout: self.fetch_stall_timeout,
            max_bytes: self.fetch_max_bytes,
            signing: None,
        }
    }
}

/// A number of seconds, or a duration with units (`90s`, `10m`, `1h30m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|err| err.to_string()),
    }
}

#[derive(Debug, Clone, Args)]
pub struct FetchConfig {
    #[command(flatten)]
    pub(crate) source: ModelSource,

    /// Directory to fetch into (an emptyDir shared with the serving container). A complete,
    /// verified earlier fetch of the same version there is reused.
    #[arg(long, env = "PINSERVE_DEST", value_name = "DIR", help_heading = MODEL)]
    pub dest: PathBuf,

    #[command(flatten)]
    pub(crate) fetch: FetchArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub(crate) source: ModelSource,

    /// Serve what `pinserve fetch` wrote into DIR, named by its pinserve.json, without
    /// contacting any registry.
    #[arg(
        long,
        env = "PINSERVE_MODEL_DIR",
        value_name = "DIR",
        conflicts_with_all = ["model_uri", "model_repository"],
        help_heading = MODEL
    )]
    pub(crate) model_dir: Option<PathBuf>,

    /// Warm the model up with this V2 inference request body (JSON), or CSV of rows (header:
    /// input names) when the file is named *.csv, instead of the MLflow input example or
    /// generated zeros, for models that refuse arbitrary inputs (ids that must be in range); a
    /// warm-up that fails fails the load.
    #[arg(long, env = "PINSERVE_WARMUP_DATA", value_name = "FILE", help_heading = MODEL)]
    pub(crate) warmup_data: Option<PathBuf>,

    /// Where `serve` keeps models it fetches itself (from a registry or object store); a
    /// verified copy of the same version there is reused after a restart.
    #[arg(
        long,
        env = "PINSERVE_CACHE_DIR",
        value_name = "DIR",
        default_value_os_t = default_cache_dir(),
        help_heading = FETCH
    )]
    pub(crate) cache_dir: PathBuf,

    /// Model versions --cache-dir keeps once the served one is ready: the least recently used
    /// (served or fetched) beyond N are deleted, never one a process serves or fetches. 0 keeps
    /// every version.
    #[arg(
        long,
        env = "PINSERVE_CACHE_MAX_VERSIONS",
        default_value_t = 3,
        value_name = "N",
        help_heading = FETCH
    )]
    cache_max_versions: usize,

    /// Bytes --cache-dir may hold once the served one is ready: the least recently used versions
    /// are deleted until it holds no more (the served version stays, even if larger). Default:
    /// no limit.
    #[arg(
        long,
        env = "PINSERVE_CACHE_MAX_BYTES",
        value_name = "BYTES",
        help_heading = FETCH
    )]
    cache_max_bytes: Option<u64>,

    #[command(flatten)]
    pub(crate) fetch: FetchArgs,

    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,

    #[command(flatten)]
    pub(crate) batching: BatchArgs,

    /// Address to listen on: IP:PORT, [IPv6]:PORT or HOST:PORT (the name is resolved and the
    /// first of its addresses that can be bound is used). It is bound before the model loads, so
    /// probes get 503 rather than a refused connection while loading.
    #[arg(
        long,
        env = "PINSERVE_LISTEN",
        default_value = "0.0.0.0:8080",
        value_parser = parse_listen_address,
        value_name = "ADDR",
        help_heading = HTTP
    )]
    pub(crate) listen: String,

    /// Address of the gRPC listener (KServe V2's GRPCInferenceService and grpc.health.v1), as
    /// --listen, or `none` for no gRPC. Bound before the model loads, like --listen.
    #[arg(
        long,
        env = "PINSERVE_GRPC_LISTEN",
        default_value = "0.0.0.0:8081",
        value_parser = parse_optional_listen_address,
        value_name = "ADDR|none",
        help_heading = HTTP
    )]
    grpc_listen: String,

    /// Largest request body accepted, in bytes; larger bodies are answered 413.
    #[arg(
        long,
        env = "PINSERVE_MAX_BODY_BYTES",
        default_value_t = 64 * 1024 * 1024,
        value_name = "BYTES",
        help_heading = HTTP
    )]
    pub(crate) max_body_bytes: usize,

    /// Bytes of request bodies held at once, while they arrive, are decoded and answered: a
    /// body takes its share before it is buffered, and a request beyond the budget is refused
    /// with 503 and Retry-After. Peak memory follows it (see the README). Default: twice
    /// --max-body-bytes; never less than it.
    #[arg(
        long,
        env = "PINSERVE_MAX_INFLIGHT_BODY_BYTES",
        value_name = "BYTES",
        help_heading = HTTP
    )]
    pub(crate) max_inflight_body_bytes: Option<usize>,

    /// Seconds to keep serving after SIGTERM while /health answers 503, so that Kubernetes
    /// removes the pod from its Service endpoints before the listener closes.
    #[arg(
        long,
        env = "PINSERVE_DRAIN_SECONDS",
        default_value_t = 5,
        value_name = "SECONDS",
        help_heading = HTTP
    )]
    pub(crate) drain_seconds: u64,

    /// Seconds in-flight requests get to finish once the listener has closed; requests still
    /// running after that are cut off so that shutdown always ends.
    #[arg(
        long,
        env = "PINSERVE_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 30,
        value_name = "SECONDS",
        help_heading = HTTP
    )]
    pub(crate) shutdown_grace_seconds: u64,

    #[command(flatten)]
    pub(crate) connections: ConnectionArgs,

    #[command(flatten)]
    pub(crate) drift: DriftArgs,
}

/// Drift monitoring against the model's reference profile.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Drift")]
pub(crate) struct DriftArgs {
    /// The reference profile to compare served rows with [default: reference.json beside the
    /// model file, when there is one; without a profile there is no drift monitoring].
    #[arg(long, env = "PINSERVE_REFERENCE_PROFILE", value_name = "FILE")]
    pub(crate) reference_profile: Option<PathBuf>,

    /// Share of scored rows that drift monitoring bins (0 < RATE <= 1).
    #[arg(long, env = "PINSERVE_DRIFT_SAMPLE_RATE", default_value_t = 1.0, value_parser = parse_rate, value_name = "RATE")]
    drift_sample_rate: f64,

    /// Rows each PSI is computed over: the last this many scored (and sampled).
    #[arg(long, env = "PINSERVE_DRIFT_WINDOW", default_value_t = 10_000, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    drift_window: u64,

    /// Seconds a row stays in the PSI's window at most.
    #[arg(long, env = "PINSERVE_DRIFT_WINDOW_SECONDS", default_value_t = 900, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    drift_window_seconds: u64,

    /// Features binned and exported one by one (label `feature`), in the profile's order; the
    /// rest get no PSI, and their missing, out-of-range and unseen values are counted together
    /// as feature="(rest)".
    #[arg(
        long,
        env = "PINSERVE_DRIFT_MAX_FEATURES",
        default_value_t = 64,
        value_name = "N"
    )]
    drift_max_features: usize,
}

impl DriftArgs {
    pub(crate) fn config(&self) -> DriftConfig {
        DriftConfig {
            sample_rate: self.drift_sample_rate,
            window_rows: usize::try_from(self.drift_window).unwrap_or(usize::MAX),
            window_age: Duration::from_secs(self.drift_window_seconds),
            max_features: self.drift_max_features,
        }
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1.0 => Ok(rate),
        _ => Err(format!("'{text}' is not a share above 0 and at most 1")),
    }
}

/// How long clients may take and how many connections they may hold.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = HTTP)]
pub(crate) struct ConnectionArgs {
    /// A client must send a request's headers within this long (HTTP/1), counted from the first
    /// byte, or from the end of the previous response on a keep-alive connection; then the
    /// connection is closed.
    #[arg(long, env = "PINSERVE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) header_read_timeout: Duration,

    /// A request's body must have arrived in full this long after its headers, or the request is
    /// answered 408 and its connection closed.
    #[arg(long, env = "PINSERVE_BODY_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) body_read_timeout: Duration,

    /// A connection with no request in flight for this long is closed (HTTP/2: sent GOAWAY).
    #[arg(long, env = "PINSERVE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) idle_timeout: Duration,

    /// Connections served at once. A few more are admitted for probes only (see the README); any
    /// beyond those are closed as soon as they are accepted.
    #[arg(long, env = "PINSERVE_MAX_CONNECTIONS", default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,

    /// Requests one HTTP/2 connection may have in flight at once.
    #[arg(long, env = "PINSERVE_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) http2_max_concurrent_streams: u32,
}

impl ConnectionArgs {
    pub(crate) fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections as usize,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
        }
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`; names are resolved when the listener is bound.
fn parse_listen_address(text: &str) -> Result<String, String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let expected =
        "expected IP:PORT, [IPv6]:PORT or HOST:PORT, e.g. 0.0.0.0:8080 or localhost:8080";
    let (host, port) = text.rsplit_once(':').ok_or_else(|| expected.to_owned())?;
    let valid_host = !host.is_empty() && !host.contains([':', '[', ']', '/']);
    if !valid_host || port.parse::<u16>().is_err() {
        return Err(expected.to_owned());
    }
    Ok(text.to_owned())
}

/// A listen address, or `none` for no listener.
fn parse_optional_listen_address(text: &str) -> Result<String, String> {
    match text {
        NO_LISTENER => Ok(text.to_owned()),
        address => parse_listen_address(address).map_err(|err| format!("{err}, or {NO_LISTENER}")),
    }
}

const NO_LISTENER: &str = "none";

/// `${XDG_CACHE_HOME:-$HOME/.cache}/pinserve`, or the temporary directory without a home.
fn default_cache_dir() -> PathBuf {
    match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(cache), _) if !cache.is_empty() => PathBuf::from(cache).join("pinserve"),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".cache/pinserve"),
        _ => std::env::temp_dir().join("pinserve"),
    }
}

impl ServeConfig {
    /// `--cache-dir` with its limits.
    pub(crate) fn cache(&self) -> Cache {
        Cache::new(self.cache_dir.clone(), self.cache_limits())
    }

    /// `--cache-max-versions 0` means no limit on the count.
    fn cache_limits(&self) -> Limits {
        Limits {
            max_versions: (self.cache_max_versions > 0).then_some(self.cache_max_versions),
            max_bytes: self.cache_max_bytes,
        }
    }

    /// `--grpc-listen`, unless it is `none`.
    pub(crate) fn grpc_listen(&self) -> Option<&str> {
        (self.grpc_listen != NO_LISTENER).then_some(self.grpc_listen.as_str())
    }

    pub(crate) fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// Dynamic batching, model instances and admission.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Batching")]
pub(crate) struct BatchArgs {
    /// Rows per ONNX Runtime call at most; requests are stacked along dimension 0 up to this
    /// many rows. A larger request runs alone.
    #[arg(long, env = "PINSERVE_MAX_BATCH_SIZE", default_value_t = 32, value_name = "ROWS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_batch_size: u32,

    /// How long a free instance may wait for more rows to join its batch (e.g. 1ms, 500us),
    /// counted from when it became free or the oldest request arrived, whichever is later; 0
    /// takes what is queued and never waits.
    #[arg(long, env = "PINSERVE_MAX_BATCH_DELAY", default_value = "1ms", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) max_batch_delay: Duration,

    /// ONNX Runtime sessions, each on a thread of its own; intra-op threads are shared out among
    /// them.
    #[arg(long, env = "PINSERVE_INSTANCES", default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) instances: u16,

    /// Rows that may wait in the queue; beyond that, requests are refused at once with 503 and
    /// Retry-After.
    #[arg(
        long,
        env = "PINSERVE_MAX_QUEUE_ROWS",
        default_value_t = 4096,
        value_name = "ROWS"
    )]
    pub(crate) max_queue_rows: usize,

    /// How long a request may wait in the queue before it is answered 504.
    #[arg(long, env = "PINSERVE_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) request_timeout: Duration,
}

impl BatchArgs {
    pub(crate) fn batch_config(&self) -> BatchConfig {
        BatchConfig {
            max_batch_size: self.max_batch_size as usize,
            max_batch_delay: self.max_batch_delay,
            max_queue_rows: self.max_queue_rows,
            request_timeout: self.request_timeout,
        }
    }
}

/// How ONNX Runtime is found and how its sessions are built.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "ONNX Runtime")]
pub(crate) struct RuntimeArgs {
    /// Where inference runs: cpu, cuda (device 0) or cuda:N. Asking for CUDA where it cannot be
    /// used fails start-up with the reason; pinserve never falls back to the CPU silently.
    #[arg(
        long,
        env = "PINSERVE_DEVICE",
        default_value = "cpu",
        value_name = "DEVICE"
    )]
    pub(crate) device: Device,

    /// Threads each ONNX Runtime session uses within one operator [default: the CPUs this
    /// process may use, divided among the --instances].
    #[arg(long, env = "PINSERVE_INTRA_OP_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) intra_op_threads: Option<u16>,

    /// Let intra-op threads spin between operators instead of sleeping. Off by default: on a
    /// machine whose cores are shared with the HTTP threads, spinning takes the CPU they need
    /// (BENCHMARKS.md: +65% throughput for small models with it off). Turn it on for the lowest
    /// latency when the model has cores to itself.
    #[arg(long, env = "PINSERVE_INTRA_OP_SPINNING")]
    pub(crate) intra_op_spinning: bool,

    /// ONNX Runtime graph optimizations applied when the session is created.
    #[arg(
        long,
        env = "PINSERVE_GRAPH_OPTIMIZATION_LEVEL",
        value_enum,
        default_value_t = GraphOptimization::All,
        value_name = "LEVEL"
    )]
    graph_optimization_level: GraphOptimization,

    /// Path to libonnxruntime.so. Without it pinserve reads ORT_DYLIB_PATH, then looks beside
    /// its executable, in ../lib, and in ~/.local/share/pinserve/onnxruntime/VERSION/.
    #[arg(long, env = "PINSERVE_ONNXRUNTIME_LIB", value_name = "PATH")]
    pub(crate) onnxruntime_lib: Option<PathBuf>,
}

impl RuntimeArgs {
    /// Options for each of `instances` sessions: without --intra-op-threads, the CPUs the process
    /// may use are shared out among them.
    pub(crate) fn session_options(&self, instances: u16) -> SessionOptions {
        let share = || (runtime::available_cpus() / usize::from(instances.max(1))).max(1);
        SessionOptions {
            device: self.device,
            intra_op_threads: self.intra_op_threads.map_or_else(share, usize::from),
            intra_op_spinning: self.intra_op_spinning,
            graph_optimization: self.graph_optimization_level,
            library: self.onnxruntime_lib.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The .onnx file to describe.
    pub(crate) path: PathBuf,

    /// Print JSON (the v2 metadata's inputs and outputs) instead of a table.
    #[arg(long, env = "PINSERVE_JSON")]
    pub(crate) json: bool,

    /// Path to libonnxruntime.so (see `pinserve serve --help`).
    #[arg(long, env = "PINSERVE_ONNXRUNTIME_LIB", value_name = "PATH")]
    pub(crate) onnxruntime_lib: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RegisterConfig {
    /// The ONNX model file; the external-data files its weights name are registered with it.
    #[arg(long, env = "PINSERVE_MODEL_FILE", value_name = "PATH")]
    pub(crate) model_file: PathBuf,

    /// The registered model's name (created if it does not exist).
    #[arg(long, env = "PINSERVE_NAME", value_name = "NAME")]
    pub(crate) name: String,

    /// MLflow tracking server holding the Model Registry [default: MLFLOW_TRACKING_URI].
    #[arg(long, env = "PINSERVE_REGISTRY_URI", value_name = "URL")]
    pub(crate) registry_uri: Option<String>,

    /// Experiment of the registering run [default: MLFLOW_EXPERIMENT_NAME, else Default].
    #[arg(long, env = "PINSERVE_EXPERIMENT", value_name = "NAME")]
    pub(crate) experiment: Option<String>,

    /// A tag on the new version; repeat for more (in the environment: comma-separated).
    #[arg(
        long = "tag",
        env = "PINSERVE_TAG",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        value_parser = parse_tag
    )]
    pub(crate) tags: Vec<(String, String)>,

    /// Point this alias (e.g. `candidate`) at the new version.
    #[arg(long, env = "PINSERVE_ALIAS", value_name = "ALIAS")]
    pub(crate) alias: Option<String>,

    /// The training data's reference profile (`pinserve profile`), checked against the model and
    /// uploaded beside it as reference.json (drift monitoring compares served inputs with it).
    #[arg(long, env = "PINSERVE_REFERENCE_PROFILE", value_name = "FILE")]
    pub(crate) reference_profile: Option<PathBuf>,

    /// The training dataset: its path and SHA-256 are recorded on the version and as the run's
    /// input.
    #[arg(long, env = "PINSERVE_DATASET", value_name = "PATH")]
    pub(crate) dataset: Option<PathBuf>,

    /// Path to libonnxruntime.so (see `pinserve serve --help`).
    #[arg(long, env = "PINSERVE_ONNXRUNTIME_LIB", value_name = "PATH")]
    pub(crate) onnxruntime_lib: Option<PathBuf>,
}

impl RegisterConfig {
    /// `--registry-uri`, else `MLFLOW_TRACKING_URI`, as MLflow clients read it.
    pub(crate) fn tracking_uri(&self) -> Result<Url, RegistryError> {
        tracking_uri(self.registry_uri.as_deref())?.ok_or_else(|| {
            RegistryError::Config(
                "say where to register: --registry-uri URL or MLFLOW_TRACKING_URI".to_owned(),
            )
        })
    }

    /// `--experiment`, else `MLFLOW_EXPERIMENT_NAME`, else MLflow's `Default` experiment.
    pub(crate) fn experiment_name(&self) -> String {
        self.experiment
            .clone()
            .or_else(|| std::env::var("MLFLOW_EXPERIMENT_NAME").ok())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "Default".to_owned())
    }
}

const EVAL: &str = "Evaluation";
const DATA: &str = "Data and inference";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EvalTask {
    Classification,
    Regression,
}

#[derive(Debug, Clone, Args)]
pub struct EvalConfig {
    /// The candidate: models:/NAME/VERSION, models:/NAME@ALIAS, a version directory or model
    /// file as a path or URL, as `serve --model-uri` takes it.
    #[arg(env = "PINSERVE_EVAL_MODEL", value_name = "MODEL")]
    pub(crate) model: String,

    /// The column holding the true label or value.
    #[arg(long, env = "PINSERVE_TARGET", value_name = "COLUMN", help_heading = EVAL)]
    pub(crate) target: String,

    /// The version to beat, as another model reference.
    #[arg(
        long,
        env = "PINSERVE_BASELINE_URI",
        value_name = "MODEL",
        conflicts_with = "baseline_from",
        help_heading = EVAL
    )]
    pub(crate) baseline_uri: Option<String>,

    /// The version to beat: the one this overlay (a directory of k8s/services/) pins today,
    /// resolved against the same registry.
    #[arg(long, env = "PINSERVE_BASELINE_FROM", value_name = "OVERLAY_DIR", help_heading = EVAL)]
    pub(crate) baseline_from: Option<PathBuf>,

    /// The gate (YAML: per-metric threshold, min_absolute_change, min_relative_change,
    /// greater_is_better; latency.p99_ms; confidence_bound).
    #[arg(long, env = "PINSERVE_GATE", value_name = "FILE", help_heading = EVAL)]
    pub(crate) gate: Option<PathBuf>,

    /// Write the report as JSON here.
    #[arg(long, env = "PINSERVE_REPORT_JSON", value_name = "FILE", help_heading = EVAL)]
    pub(crate) report_json: Option<PathBuf>,

    /// Write the report as Markdown (a pull request's body) here.
    #[arg(long, env = "PINSERVE_REPORT_MD", value_name = "FILE", help_heading = EVAL)]
    pub(crate) report_md: Option<PathBuf>,

    /// Log the metrics to an MLflow run and tag the candidate's model version with the outcome.
    #[arg(long, env = "PINSERVE_LOG_TO_MLFLOW", help_heading = EVAL)]
    pub(crate) log_to_mlflow: bool,

    /// Experiment of the evaluation run.
    #[arg(long, env = "PINSERVE_EXPERIMENT", default_value = "pinserve-eval", value_name = "NAME", help_heading = EVAL)]
    pub(crate) experiment: String,

    /// The positive class of a binary classifier.
    #[arg(long, env = "PINSERVE_POSITIVE_CLASS", default_value = "1", value_name = "LABEL", help_heading = EVAL)]
    pub(crate) positive_class: String,

    /// Bootstrap resamples for the confidence intervals (0: none).
    #[arg(long, env = "PINSERVE_BOOTSTRAP", default_value_t = 1000, value_name = "N", help_heading = EVAL)]
    pub(crate) bootstrap: usize,

    /// Confidence level of the intervals.
    #[arg(long, env = "PINSERVE_CONFIDENCE", default_value_t = 0.95, value_name = "C", help_heading = EVAL)]
    pub(crate) confidence: f64,

    /// Seed of the bootstrap, so that two runs agree.
    #[arg(long, env = "PINSERVE_SEED", default_value_t = 0, value_name = "S", help_heading = EVAL)]
    pub(crate) seed: u64,

    #[command(flatten)]
    pub(crate) scoring: ScoringArgs,
}

/// What `eval` and `profile` share: the data, how its columns and the model's outputs are read,
/// and how the model is fetched and run (as `serve` runs it).
#[derive(Debug, Clone, Args)]
pub(crate) struct ScoringArgs {
    /// The data: a CSV or Parquet file, as a local path or a URL (s3://, gs://, az://,
    /// https://) fetched with the model fetch's retries and timeouts; a `.sha256` sidecar
    /// beside it is verified.
    #[arg(long, env = "PINSERVE_DATA", value_name = "PATH|URL", help_heading = DATA)]
    pub(crate) data: String,

    /// The data file's SHA-256: nothing is computed unless the bytes read have it.
    #[arg(long, env = "PINSERVE_DATA_SHA256", value_name = "HEX", value_parser = parse_optional_digest, help_heading = DATA)]
    pub(crate) data_sha256: Option<OptionalDigest>,

    /// For a model with one 2-D input: the columns that make its features, in order [default:
    /// every column but the target, in file order].
    #[arg(
        long,
        env = "PINSERVE_FEATURE_COLUMNS",
        value_name = "A,B,...",
        value_delimiter = ',',
        help_heading = DATA
    )]
    pub(crate) feature_columns: Vec<String>,

    /// The task [default: inferred from the model's outputs].
    #[arg(long, env = "PINSERVE_TASK", value_enum, help_heading = DATA)]
    pub(crate) task: Option<EvalTask>,

    /// The output holding predicted labels (classification) or values (regression).
    #[arg(long, env = "PINSERVE_LABEL_OUTPUT", value_name = "NAME", help_heading = DATA)]
    pub(crate) label_output: Option<String>,

    /// The output holding class scores or probabilities.
    #[arg(long, env = "PINSERVE_SCORE_OUTPUT", value_name = "NAME", help_heading = DATA)]
    pub(crate) score_output: Option<String>,

    /// Rows per request sent through the batcher.
    #[arg(long, env = "PINSERVE_BATCH_SIZE", default_value_t = 256, value_name = "ROWS", help_heading = DATA)]
    pub(crate) batch_size: usize,

    /// ONNX Runtime sessions, each on a thread of its own, as `serve --instances` (intra-op
    /// threads are shared out among them). A model that costs less per row than reading its
    /// features scores fastest with one session per CPU (BENCHMARKS.md).
    #[arg(long, env = "PINSERVE_INSTANCES", default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), help_heading = DATA)]
    pub(crate) instances: u16,

    /// MLflow tracking server for models:/ references and eval's --log-to-mlflow [default:
    /// MLFLOW_TRACKING_URI].
    #[arg(long, env = "PINSERVE_REGISTRY_URI", value_name = "URL", help_heading = MODEL)]
    pub(crate) registry_uri: Option<String>,

    /// Where fetched models are kept (as `serve --cache-dir`).
    #[arg(
        long,
        env = "PINSERVE_CACHE_DIR",
        value_name = "DIR",
        default_value_os_t = default_cache_dir(),
        help_heading = FETCH
    )]
    pub(crate) cache_dir: PathBuf,

    #[command(flatten)]
    pub(crate) fetch: FetchArgs,

    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
}

const PROFILE: &str = "Profile";

/// `pinserve profile`: the data a model was trained on, summarised for drift monitoring.
#[derive(Debug, Clone, Args)]
pub struct ProfileConfig {
    /// The model the profile is for, as `serve --model-uri` takes it: its predictions on the
    /// data are profiled too, and its inputs say how the columns map.
    #[arg(env = "PINSERVE_PROFILE_MODEL", value_name = "MODEL")]
    pub(crate) model: String,

    /// A column of the data that is not a feature (the training target), left out.
    #[arg(long, env = "PINSERVE_TARGET", value_name = "COLUMN", help_heading = PROFILE)]
    pub(crate) target: Option<String>,

    /// Where to write the profile (JSON); `reference.json` beside `model.onnx` travels with the
    /// model.
    #[arg(long, env = "PINSERVE_OUT", value_name = "FILE", help_heading = PROFILE)]
    pub out: PathBuf,

    /// Quantile bins per numeric feature and per score.
    #[arg(long, env = "PINSERVE_BINS", default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u16).range(2..=1000), help_heading = PROFILE)]
    pub(crate) bins: u16,

    /// Categories listed per categorical feature; the rest count as "other".
    #[arg(long, env = "PINSERVE_MAX_CATEGORIES", default_value_t = 20, value_name = "K", value_parser = clap::value_parser!(u16).range(1..=1000), help_heading = PROFILE)]
    pub(crate) max_categories: u16,

    /// Rows sampled (uniformly, seeded) for the bins of larger data; smaller data is described
    /// exactly.
    #[arg(long, env = "PINSERVE_SAMPLE_ROWS", default_value_t = 100_000, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..), help_heading = PROFILE)]
    pub(crate) sample_rows: u64,

    /// Seed of the sample, so that two runs agree.
    #[arg(long, env = "PINSERVE_SEED", default_value_t = 0, value_name = "S", help_heading = PROFILE)]
    pub(crate) seed: u64,

    #[command(flatten)]
    pub(crate) scoring: ScoringArgs,
}

impl ScoringArgs {
    /// `uri` resolved as `serve --model-uri` resolves it.
    pub(crate) fn reference(&self, uri: &str) -> Result<ModelReference, RegistryError> {
        ModelReference::parse(uri, None, None, self.tracking_uri()?.as_ref())
    }

    pub(crate) fn tracking_uri(&self) -> Result<Option<Url>, RegistryError> {
        tracking_uri(self.registry_uri.as_deref())
    }

    /// The digest `--data-sha256` pins, if any.
    pub(crate) fn data_sha256(&self) -> Option<Digest> {
        self.data_sha256.and_then(|digest| digest.0)
    }
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

const PROMOTE: &str = "Promotion";
const GIT: &str = "Git and pull request";

/// `pinserve promote`: which overlay, which version and digest, and what to do with the change.
#[derive(Debug, Clone, Args)]
pub struct PromoteConfig {
    /// The service overlay to edit, k8s/services/SERVICE/ENV (the folder of its kustomization).
    #[arg(long, env = "PINSERVE_OVERLAY", value_name = "DIR", help_heading = PROMOTE)]
    pub(crate) overlay: PathBuf,

    /// The model version to pin (an older one rolls back).
    #[arg(long, env = "PINSERVE_VERSION", value_name = "V", value_parser = parse_version, help_heading = PROMOTE)]
    pub(crate) version: String,

    /// The model the overlay must pin; a different pinned name is refused.
    #[arg(long, env = "PINSERVE_MODEL", value_name = "NAME", help_heading = PROMOTE)]
    pub(crate) model: Option<String>,

    /// The model file's SHA-256 to pin as MODEL_SHA256.
    #[arg(long, env = "PINSERVE_SHA256", value_name = "HEX", help_heading = PROMOTE)]
    pub(crate) sha256: Option<Digest>,

    /// Read the digest from the version's `sha256` tag in the MLflow Model Registry.
    #[arg(long, env = "PINSERVE_SHA256_FROM_REGISTRY", conflicts_with = "sha256", help_heading = PROMOTE)]
    pub(crate) sha256_from_registry: bool,

    /// MLflow tracking server for --sha256-from-registry [default: MLFLOW_TRACKING_URI].
    #[arg(long, env = "PINSERVE_REGISTRY_URI", value_name = "URL", help_heading = PROMOTE)]
    pub(crate) registry_uri: Option<Url>,

    /// The JSON report `pinserve eval` wrote: its model, version and sha256 must match, and it
    /// must say `passed`.
    #[arg(long, env = "PINSERVE_REPORT", value_name = "FILE", help_heading = PROMOTE)]
    pub(crate) report: Option<PathBuf>,

    /// A Markdown report for the pull request's body [default: a summary of --report].
    #[arg(long, env = "PINSERVE_REPORT_MD", value_name = "FILE", help_heading = PROMOTE)]
    pub(crate) report_md: Option<PathBuf>,

    /// Print the diff the promotion would make, and change nothing.
    #[arg(long, env = "PINSERVE_DRY_RUN", conflicts_with = "commit", help_heading = PROMOTE)]
    pub(crate) dry_run: bool,

    /// Commit the change on a new branch (the checkout itself is left as it is).
    #[arg(long, env = "PINSERVE_COMMIT", help_heading = GIT)]
    pub(crate) commit: bool,

    /// The branch to commit on [default: pinserve/promote/SERVICE-ENV-VERSION].
    #[arg(long, env = "PINSERVE_BRANCH", value_name = "NAME", requires = "commit", help_heading = GIT)]
    pub(crate) branch: Option<String>,

    /// Push the branch to this git remote.
    #[arg(long, env = "PINSERVE_PUSH", value_name = "REMOTE", requires = "commit", help_heading = GIT)]
    pub(crate) push: Option<String>,

    /// Open a pull request (merge request) for the pushed branch, unless one is open already.
    #[arg(
        long,
        env = "PINSERVE_OPEN_PR",
        value_enum,
        value_name = "FORGE",
        requires_all = ["push", "forge_url", "pr_base"],
        help_heading = GIT
    )]
    pub(crate) open_pr: Option<ForgeKind>,

    /// The forge's API root, e.g. https://api.github.com, https://gitlab.com/api/v4 or
    /// https://gitea.example/api/v1.
    #[arg(long, env = "PINSERVE_FORGE_URL", value_name = "URL", help_heading = GIT)]
    pub(crate) forge_url: Option<Url>,

    /// OWNER/REPO (GitLab: the project's path or id) [default: from the push remote's URL].
    #[arg(long, env = "PINSERVE_FORGE_REPO", value_name = "REPO", help_heading = GIT)]
    pub(crate) forge_repo: Option<String>,

    /// The branch the pull request is to merge into.
    #[arg(long, env = "PINSERVE_PR_BASE", value_name = "BRANCH", help_heading = GIT)]
    pub(crate) pr_base: Option<String>,
}

/// A version as the overlay pins it: it also names a git branch and is written into YAML, so
/// only letters, digits, `.`, `_` and `-` (MLflow's versions are numbers).
fn parse_version(text: &str) -> Result<String, String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if text.is_empty() || !text.chars().all(safe) || text.starts_with(['.', '-']) {
        return Err(format!(
            "'{text}' is not a model version: letters, digits, '.', '_' and '-' only"
        ));
    }
    Ok(text.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, env = "PINSERVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = LOGGING)]
    pub(crate) log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `debug`, `pinserve=debug,ort=info`). ONNX
    /// Runtime's own messages are under the `ort` target; at info they describe every graph pass.
    #[arg(
        long,
        global = true,
        env = "PINSERVE_LOG_LEVEL",
        default_value = "info,ort=warn",
        value_name = "FILTER",
        help_heading = LOGGING
    )]
    pub(crate) log_level: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_a_pinserve_environment_variable() {
        let command = Cli::command();
        let mut commands = vec![&command];
        commands.extend(command.get_subcommands());
        for cmd in commands {
            for arg in cmd.get_arguments() {
                if arg.is_positional() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let expected = format!(
                    "PINSERVE_{}",
                    arg.get_long().unwrap().to_uppercase().replace('-', "_")
                );
                assert_eq!(
                    env.as_deref(),
                    Some(expected.as_str()),
                    "flag --{}",
                    arg.get_long().unwrap()
                );
            }
        }
    }

    #[test]
    fn serve_accepts_the_documented_short_names() {
        let cli = Cli::try_parse_from([
            "pinserve",
            "serve",
            "--model-repository",
            "models",
            "--model",
            "iris",
            "--version",
            "3",
        ])
        .unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(config.source.model_name.as_deref(), Some("iris"));
        assert_eq!(config.source.model_version.as_deref(), Some("3"));
        assert!(matches!(
            config.source.reference(),
            Ok(ModelReference::Repository { .. })
        ));
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.grpc_listen(), Some("0.0.0.0:8081"));
        assert_eq!(config.runtime.device, Device::Cpu);
        assert_eq!(config.drain(), Duration::from_secs(5));
    }

    #[test]
    fn listen_takes_an_address_or_a_host_name_with_a_port() {
        for good in [
            "0.0.0.0:8080",
            "[::1]:0",
            "localhost:8080",
            "pinserve.ns.svc:80",
        ] {
            assert_eq!(parse_listen_address(good).as_deref(), Ok(good));
        }
        for bad in [
            "localhost",
            ":8080",
            "localhost:http",
            "::1:80",
            "host:65536",
        ] {
            let err = parse_listen_address(bad).unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
        assert_eq!(parse_optional_listen_address("none").as_deref(), Ok("none"));
        assert_eq!(
            parse_optional_listen_address("[::]:8081").as_deref(),
            Ok("[::]:8081")
        );
        assert!(parse_optional_listen_address("off").is_err());
    }

    fn cache_limits(args: &[&str]) -> Limits {
        let mut argv = vec!["pinserve", "serve", "--model-uri", "/srv/m/1"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(config) => config.cache_limits(),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn the_cache_keeps_three_versions_unless_told_otherwise() {
        let limits = |max_versions, max_bytes| Limits {
            max_versions,
            max_bytes,
        };
        assert_eq!(cache_limits(&[]), limits(Some(3), None));
        assert_eq!(
            cache_limits(&["--cache-max-versions", "0", "--cache-max-bytes", "1000"]),
            limits(None, Some(1000))
        );
        assert_eq!(
            cache_limits(&["--cache-max-versions", "1"]),
            limits(Some(1), None)
        );
    }

    fn source(args: &[&str]) -> ModelSource {
        let mut argv = vec!["pinserve", "fetch", "--dest", "d"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Fetch(config) => config.source,
            _ => panic!("not fetch"),
        }
    }

    #[test]
    fn model_flags_name_a_repository_a_uri_or_a_registry_version() {
        let uri = source(&[
            "--model-uri",
            "models:/fraud@champion",
            "--registry-uri",
            "http://mlflow:5000",
        ]);
        assert!(matches!(
            uri.reference(),
            Ok(ModelReference::Registry {
                selector: Selector::Alias(_),
                ..
            })
        ));
        let registry = source(&[
            "--registry-uri",
            "http://mlflow:5000",
            "--model",
            "fraud",
            "--version",
            "7",
        ]);
        assert!(matches!(
            registry.reference(),
            Ok(ModelReference::Registry {
                selector: Selector::Version(_),
                ..
            })
        ));
        let s3 = source(&[
            "--model-repository",
            "s3://bucket/models",
            "--model",
            "fraud",
            "--version",
            "7",
        ]);
        let reference = s3.reference().unwrap();
        assert_eq!(
            reference.to_string(),
            "s3://bucket/models (model 'fraud' version '7')"
        );
        let escaping = source(&[
            "--model-repository",
            "/m",
            "--model",
            "..",
            "--version",
            "7",
        ]);
        assert!(escaping.reference().is_err());
        for without_version in [
            &["--model-repository", "/m", "--model", "fraud"][..],
            &["--registry-uri", "http://mlflow:5000", "--model", "fraud"][..],
        ] {
            let err = source(without_version).reference().unwrap_err().to_string();
            assert!(err.starts_with("--version is missing"), "{err}");
        }
        let err = source(&["--model-repository", "/m", "--version", "7"])
            .reference()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--model is missing"), "{err}");
        let nothing = source(&[]);
        assert!(
            nothing
                .reference()
                .unwrap_err()
                .to_string()
                .contains("say which model")
        );
    }

    #[test]
    fn an_empty_model_sha256_pins_nothing() {
        let digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let parse = |value: &str| -> Result<Option<Digest>, clap::Error> {
            let flag = format!("--model-sha256={value}");
            match Cli::try_parse_from(["pinserve", "fetch", "--dest", "d", &flag])?.command {
                Command::Fetch(config) => Ok(config.fetch.model_sha256()),
                _ => panic!("not fetch"),
            }
        };
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse(digest).unwrap(), Some(digest.parse().unwrap()));
        assert!(parse("abc").is_err());
    }

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn intra_op_threads_must_be_positive() {
        let parsed = Cli::try_parse_from([
            "pinserve",
            "serve",
            "--model-repository",
            "m",
            "--model",
            "a",
            "--version",
            "1",
            "--intra-op-threads",
            "0",
        ]);
        assert!(parsed.is_err());
    }
}
