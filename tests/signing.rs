//! Signed models: versions signed in the test by the real OpenSSF `model_signing` tool
//! (`tests/support/sign_model.py` in `.venv-signing`, which scripts/test.sh creates) are fetched,
//! served and evaluated only when the signature verifies and the version directory holds exactly
//! the signed files; every refusal names the file and the reason.

mod common;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::{Server, run_fetch, services, stderr};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const MODEL: &str = "breast_cancer";
const IDENTITY: &str = "trainer@example.com";

/// The Python with `model_signing` and `cryptography`: `PINSERVE_TEST_SIGNING_PYTHON`, else
/// the repository's `.venv-signing`.
fn signing_python() -> PathBuf {
    std::env::var_os("PINSERVE_TEST_SIGNING_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-signing/bin/python"),
        PathBuf::from,
    )
}

/// Runs the signing driver with `args`; it must succeed.
fn driver(args: &[&OsStr]) {
    let python = signing_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sign_model.py");
    let output = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {} ({err}); scripts/test.sh creates .venv-signing",
                python.display()
            )
        });
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
}

/// Keys, a test CA and a model repository holding one version of the fixture, unsigned.
struct Signing {
    material: tempfile::TempDir,
    repository: tempfile::TempDir,
}

impl Signing {
    fn new() -> Signing {
        let material = tempfile::tempdir().unwrap();
        driver(&["keys".as_ref(), material.path().as_os_str()]);
        let repository = tempfile::tempdir().unwrap();
        let version = repository.path().join(MODEL).join("1");
        std::fs::create_dir_all(&version).unwrap();
        let fixture = common::fixtures().join(MODEL).join("1/model.onnx");
        std::fs::copy(fixture, version.join("model.onnx")).unwrap();
        std::fs::write(version.join("MLmodel"), "flavors: {}\n").unwrap();
        Signing {
            material,
            repository,
        }
    }

    fn version(&self) -> PathBuf {
        self.repository.path().join(MODEL).join("1")
    }

    fn version_str(&self) -> String {
        self.version().to_str().unwrap().to_owned()
    }

    /// A file of the key material (`signer.pub`, `ca.pem`, ...).
    fn file(&self, name: &str) -> String {
        self.material.path().join(name).to_str().unwrap().to_owned()
    }

    /// Signs the version with `model_signing sign key|certificate` into `signature`; `how` is
    /// `key` (P-256), `key signer-p384`, `key signer-p521`, `certificate`, or `certificate
    /// stranger` (a CA the tests do not trust).
    fn sign(&self, how: &str, signature: &str) {
        let default = if how == "key" { "signer" } else { "leaf" };
        let (command, which) = how.split_once(' ').unwrap_or((how, default));
        let version = self.version();
        let signature = version.join(signature);
        driver(&[
            command.as_ref(),
            self.material.path().as_os_str(),
            version.as_os_str(),
            signature.as_os_str(),
            which.as_ref(),
        ]);
    }

    /// The SHA-256 of the in-toto statement in the version's `model.sig`.
    fn statement_sha256(&self) -> String {
        let bundle: Value =
            serde_json::from_slice(&std::fs::read(self.version().join("model.sig")).unwrap())
                .unwrap();
        let payload = bundle["dsseEnvelope"]["payload"].as_str().unwrap();
        hex::encode(Sha256::digest(STANDARD.decode(payload).unwrap()))
    }

    /// `key:sha256:HEX` of `signer.pub`: the DER key's SHA-256, as pinserve names a key signer.
    fn key_signer(&self) -> String {
        let pem = std::fs::read_to_string(self.file("signer.pub")).unwrap();
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).unwrap();
        format!("key:sha256:{}", hex::encode(Sha256::digest(der)))
    }
}

/// `pinserve fetch` of the repository's version into a fresh directory, with `extra` flags.
async fn fetch(signing: &Signing, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dest = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--model-repository",
        signing.repository.path().to_str().unwrap(),
        "--model",
        MODEL,
        "--version",
        "1",
        "--dest",
        dest.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (run_fetch(&args, &[]).await, dest)
}

/// A refused fetch: non-zero exit, an error naming every one of `fragments`, and no manifest
/// left in `--dest`, so the directory cannot pass for a verified fetch (`serve --model-dir`
/// refuses it even without the signature flags).
async fn assert_fetch_refused(signing: &Signing, extra: &[&str], fragments: &[&str]) {
    let (output, dest) = fetch(signing, extra).await;
    let text = stderr(&output);
    assert!(!output.status.success(), "fetch succeeded: {text}");
    for fragment in fragments {
        assert!(text.contains(fragment), "{fragment:?} not in: {text}");
    }
    assert!(
        !dest.path().join("pinserve.json").exists(),
        "a refused version kept its manifest"
    );
}

/// The `signer` label of `pinserve_model_info`, and `model`'s v2 metadata's signature
/// parameters.
async fn assert_signed_by(server: &Server, model: &str, signer: &str, statement_sha256: &str) {
    let metrics = server.metrics().await;
    let info = common::metrics::find_sample(&metrics, "pinserve_model_info", &[("signer", signer)]);
    assert_eq!(
        info,
        Some(1.0),
        "no pinserve_model_info signed by {signer} in {metrics}"
    );
    let (status, metadata) = server.get(&format!("/v2/models/{model}")).await;
    assert_eq!(status, 200, "{metadata}");
    assert_eq!(metadata["parameters"]["signer"], signer, "{metadata}");
    assert_eq!(
        metadata["parameters"]["signed_statement_sha256"], statement_sha256,
        "{metadata}"
    );
}

#[tokio::test]
async fn a_key_signed_version_is_fetched_then_served_from_its_directory() {
    let signing = Signing::new();
    signing.sign("key", "model.sig");
    let key = signing.file("signer.pub");
    let (output, dest) = fetch(&signing, &["--signature-public-key", &key]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("model signature verified"),
        "{}",
        stderr(&output)
    );

    // The directory now holds pinserve.json too, which is not part of the model.
    let server = Server::start(&[
        "--model-dir",
        dest.path().to_str().unwrap(),
        "--signature-public-key",
        &key,
    ]);
    server.wait_ready().await;
    assert_signed_by(
        &server,
        MODEL,
        &signing.key_signer(),
        &signing.statement_sha256(),
    )
    .await;
}

#[tokio::test]
async fn p384_and_p521_keys_verify_with_their_own_hashes() {
    let signing = Signing::new();
    for name in ["signer-p384", "signer-p521"] {
        signing.sign(&format!("key {name}"), "model.sig");
        let key = signing.file(&format!("{name}.pub"));
        let (output, _dest) = fetch(&signing, &["--signature-public-key", &key]).await;
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let p256 = signing.file("signer.pub");
        assert_fetch_refused(
            &signing,
            &["--signature-public-key", &p256],
            &["does not verify"],
        )
        .await;
    }
}

#[tokio::test]
async fn fetch_refuses_a_version_that_is_not_exactly_the_signed_one() {
    let signing = Signing::new();
    let version = signing.version();
    std::fs::write(version.join("vocabulary.txt"), "a\nb\n").unwrap();
    signing.sign("key", "model.sig");
    let key = signing.file("signer.pub");
    let with_key = ["--signature-public-key", key.as_str()];

    assert_fetch_refused(
        &signing,
        &["--signature-public-key", &signing.file("other.pub")],
        &["model.sig", "does not verify"],
    )
    .await;

    std::fs::remove_file(version.join("vocabulary.txt")).unwrap();
    assert_fetch_refused(
        &signing,
        &with_key,
        &["vocabulary.txt", "signed but missing"],
    )
    .await;
    std::fs::write(version.join("vocabulary.txt"), "a\nb\n").unwrap();

    std::fs::write(version.join("notes.txt"), "added later").unwrap();
    assert_fetch_refused(
        &signing,
        &with_key,
        &["notes.txt", "not in the signed statement"],
    )
    .await;
    std::fs::remove_file(version.join("notes.txt")).unwrap();

    let mut tampered = std::fs::read(version.join("MLmodel")).unwrap();
    tampered.extend_from_slice(b"# changed\n");
    std::fs::write(version.join("MLmodel"), &tampered).unwrap();
    assert_fetch_refused(&signing, &with_key, &["MLmodel", "changed after signing"]).await;
    let (output, _dest) = fetch(&signing, &[]).await;
    assert!(
        output.status.success(),
        "without a key, signatures are not looked at: {}",
        stderr(&output)
    );
    std::fs::write(version.join("MLmodel"), "flavors: {}\n").unwrap();

    std::fs::write(version.join("model.sig"), "{\"mediaType\": 3}").unwrap();
    assert_fetch_refused(&signing, &with_key, &["model.sig", "malformed signature"]).await;
    std::fs::remove_file(version.join("model.sig")).unwrap();
    assert_fetch_refused(&signing, &with_key, &["model.sig", "no signature"]).await;
}

#[tokio::test]
async fn certificate_signatures_are_checked_against_the_chain_and_the_identity() {
    let signing = Signing::new();
    signing.sign("certificate", "model.sig");
    let chain = signing.file("ca.pem");
    let repository = signing.repository.path().to_str().unwrap();
    let server = Server::start(&[
        "--model-repository",
        repository,
        "--model",
        MODEL,
        "--version",
        "1",
        "--signature-certificate-chain",
        &chain,
        "--signature-identity",
        IDENTITY,
    ]);
    server.wait_ready().await;
    assert_signed_by(&server, MODEL, IDENTITY, &signing.statement_sha256()).await;

    let chain_flag = ["--signature-certificate-chain", chain.as_str()];
    let wrong_identity = [
        chain_flag[0],
        chain_flag[1],
        "--signature-identity",
        "intruder@example.com",
    ];
    assert_fetch_refused(
        &signing,
        &wrong_identity,
        &["model.sig", "intruder@example.com"],
    )
    .await;

    signing.sign("certificate stranger", "model.sig");
    assert_fetch_refused(
        &signing,
        &chain_flag,
        &[
            "model.sig",
            "not issued by a certificate of --signature-certificate-chain",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_signature_file_of_another_name_is_read_with_signature_file() {
    let signing = Signing::new();
    signing.sign("key", "release.sigstore.json");
    let key = signing.file("signer.pub");
    assert_fetch_refused(
        &signing,
        &["--signature-public-key", &key],
        &["model.sig", "no signature"],
    )
    .await;
    let (output, _dest) = fetch(
        &signing,
        &[
            "--signature-public-key",
            &key,
            "--signature-file",
            "release.sigstore.json",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
}

/// The production `trusted_root.json` that `sigstore-python` (in `.venv-signing`) ships and
/// verifies with.
fn sigstore_python_trust_root() -> String {
    let output = Command::new(signing_python())
        .args([
            "-c",
            "import pathlib, sigstore; print(pathlib.Path(sigstore.__file__).parent / '_store' / 'https%3A%2F%2Ftuf-repo-cdn.sigstore.dev' / 'trusted_root.json')",
        ])
        .output()
        .expect("cannot run the signing Python");
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A keyless signature cannot be made offline, so this one comes from `model_signing`'s own
/// test data (tests/data/sigstore-keyless/README.md): its files and bundle are laid into the
/// version beside the model files, which the signer never saw. The bundle verifies (Fulcio chain,
/// SCT, Rekor inclusion proof and checkpoint, identity and issuer) against sigstore-python's
/// trust root, offline; the unsigned model files are then named.
#[tokio::test]
async fn keyless_signatures_are_verified_offline_against_a_trust_root() {
    let signing = Signing::new();
    let signed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigstore-keyless/signed");
    for name in ["signme-1", "signme-2", "model.sig"] {
        std::fs::copy(signed.join(name), signing.version().join(name)).unwrap();
    }
    let root = sigstore_python_trust_root();
    let keyless = |identity: &'static str| {
        [
            "--sigstore-trust-root",
            root.as_str(),
            "--signature-identity",
            identity,
            "--signature-oidc-issuer",
            "https://sigstore.verify.ibm.com/oauth2",
        ]
    };
    assert_fetch_refused(
        &signing,
        &keyless("stefanb@us.ibm.com"),
        &["MLmodel", "not in the signed statement"],
    )
    .await;
    assert_fetch_refused(
        &signing,
        &keyless("trainer@example.com"),
        &[
            "model.sig",
            "keyless signature does not verify",
            "trainer@example.com",
        ],
    )
    .await;

    let chain = signing.file("ca.pem");
    assert_fetch_refused(
        &signing,
        &["--signature-certificate-chain", &chain],
        &["keyless Sigstore signature", "--sigstore-trust-root"],
    )
    .await;
}

#[tokio::test]
async fn serve_reports_failed_for_an_unsigned_file() {
    let signing = Signing::new();
    signing.sign("key", "model.sig");
    std::fs::write(signing.version().join("extra.onnx.data"), "weights").unwrap();
    let server = Server::start(&[
        "--model-uri",
        &signing.version_str(),
        "--signature-public-key",
        &signing.file("signer.pub"),
    ]);
    let health = server.wait_for_health("failed").await;
    let error = health["error"].as_str().unwrap();
    assert!(
        error.contains("extra.onnx.data") && error.contains("not in the signed statement"),
        "{error}"
    );
}

/// `pinserve eval DIR` on the fixture's held-out data, with `extra` flags.
async fn eval(dir: &str, extra: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let data = common::fixtures().join(MODEL).join("test.csv");
    common::pinserve_async()
        .args([
            "eval",
            dir,
            "--data",
            data.to_str().unwrap(),
            "--target",
            "target",
        ])
        .args(["--cache-dir", cache.path().to_str().unwrap()])
        .args(extra)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .await
        .expect("pinserve eval runs")
}

#[tokio::test]
async fn eval_scores_a_signed_version_and_refuses_a_changed_one() {
    let signing = Signing::new();
    signing.sign("key", "model.sig");
    let key = signing.file("signer.pub");
    let output = eval(&signing.version_str(), &["--signature-public-key", &key]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let model = signing.version().join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.push(0);
    std::fs::write(&model, bytes).unwrap();
    let output = eval(&signing.version_str(), &["--signature-public-key", &key]).await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "an error: {text}");
    assert!(
        text.contains("model.onnx") && text.contains("changed after signing"),
        "{text}"
    );
}

/// `serve --model-uri URI` into a fresh cache, trusting `trust` (a flag and its file).
fn serve_uri(uri: &str, trust: [&str; 2], env: &[(&str, String)]) -> (Server, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let args = [
        "--model-uri",
        uri,
        "--cache-dir",
        cache_dir,
        trust[0],
        trust[1],
    ];
    (Server::start_with_env(&args, env), cache)
}

/// Uploads every file of `dir` under `s3://BUCKET/PREFIX/` of the test S3 server with boto3,
/// as a training pipeline's upload step would.
fn upload(dir: &Path, prefix: &str) {
    let script = r#"
import boto3, os, pathlib, sys
s3 = boto3.client("s3", endpoint_url=os.environ["PINSERVE_TEST_S3_ENDPOINT"],
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
root = pathlib.Path(sys.argv[1])
for path in root.rglob("*"):
    if path.is_file():
        key = sys.argv[2] + "/" + path.relative_to(root).as_posix()
        s3.upload_file(str(path), os.environ["PINSERVE_TEST_S3_BUCKET"], key)
"#;
    services_script(script, &[dir.as_os_str(), prefix.as_ref()]);
}

#[tokio::test]
async fn a_signed_version_in_an_object_store_is_verified_in_the_cache() {
    let signing = Signing::new();
    signing.sign("certificate", "model.sig");
    let prefix = services::unique_name("signed");
    upload(&signing.version(), &format!("{prefix}/{MODEL}/1"));
    let uri = format!(
        "s3://{}/{prefix}/{MODEL}/1",
        services::var("PINSERVE_TEST_S3_BUCKET")
    );
    let trust = ["--signature-certificate-chain", &signing.file("ca.pem")];
    let (server, _cache) = serve_uri(&uri, trust, &services::s3_env());
    server.wait_ready().await;
    assert_signed_by(&server, MODEL, IDENTITY, &signing.statement_sha256()).await;
    drop(server);

    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("backdoor.py"), "import os").unwrap();
    upload(other.path(), &format!("{prefix}/{MODEL}/1"));
    let (server, _cache) = serve_uri(&uri, trust, &services::s3_env());
    let health = server.wait_for_health("failed").await;
    let error = health["error"].as_str().unwrap();
    assert!(error.contains("backdoor.py"), "{error}");
}

/// Logs `dir` as a run's `model` artifacts in the test MLflow server and registers them as a
/// new version of `name` (created on first use), as a training pipeline registers what it
/// signed; returns the version.
fn register_in_mlflow(dir: &Path, name: &str) -> String {
    let script = r#"
import sys
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
with mlflow.start_run() as run:
    mlflow.log_artifacts(sys.argv[1], "model")
client = MlflowClient()
try:
    client.create_registered_model(sys.argv[2])
except MlflowException:
    pass
version = client.create_model_version(sys.argv[2], run.info.artifact_uri + "/model", run_id=run.info.run_id)
print(version.version)
"#;
    let stdout = services_script(script, &[dir.as_os_str(), name.as_ref()]);
    stdout.lines().last().unwrap().trim().to_owned()
}

/// Runs a Python `script` with `args` in the services' environment (boto3, MLflow), pointed at
/// the test MLflow server; it must succeed. Returns what it printed.
fn services_script(script: &str, args: &[&OsStr]) -> String {
    let output = Command::new(services::services_python())
        .args(["-c", script])
        .args(args)
        .env("MLFLOW_TRACKING_URI", services::mlflow_uri())
        .output()
        .expect("the services' Python runs");
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_signed_version_registered_in_mlflow_is_verified_when_served() {
    let signing = Signing::new();
    signing.sign("key", "model.sig");
    let name = services::unique_name("signed");
    let signed = register_in_mlflow(&signing.version(), &name);
    std::fs::write(signing.version().join("patch.py"), "import os").unwrap();
    let extended = register_in_mlflow(&signing.version(), &name);

    let trust = ["--signature-public-key", &signing.file("signer.pub")];
    let mlflow = [("MLFLOW_TRACKING_URI", services::mlflow_uri())];
    let serve = |version: &str| serve_uri(&format!("models:/{name}/{version}"), trust, &mlflow);
    let (server, _cache) = serve(&signed);
    server.wait_ready().await;
    assert_signed_by(
        &server,
        &name,
        &signing.key_signer(),
        &signing.statement_sha256(),
    )
    .await;

    let (server, _cache) = serve(&extended);
    let health = server.wait_for_health("failed").await;
    let error = health["error"].as_str().unwrap();
    assert!(
        error.contains("patch.py") && error.contains("not in the signed statement"),
        "{error}"
    );
}
