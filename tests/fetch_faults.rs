//! `pinserve fetch` and `serve --model-uri` against a server that fails on purpose: every fault
//! is either retried to a correct, verified model or refused with a clear error, and a partial
//! or wrong model is never left where it could be served.

mod common;

use std::{path::Path, process::Output, time::Duration};

use common::{
    Server,
    faulty::{FaultyServer, Reply, Route, SilentServer},
    fixtures,
    metrics::find_sample,
    run_fetch, stderr, tabular_request,
};
use serde_json::json;

const MODEL: &str = "/m/1/model.onnx";
const SIDECAR: &str = "/m/1/model.onnx.sha256";

fn model_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("tabular_mlp/1/model.onnx")).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

async fn fetch(args: &[&str]) -> Output {
    run_fetch(args, &[]).await
}

/// Fetches the version directory `/m/1` of `server` into `dest`.
async fn fetch_version(server: &FaultyServer, dest: &Path, extra: &[&str]) -> Output {
    let uri = server.url("/m/1");
    let mut args = vec![
        "--model-uri",
        uri.as_str(),
        "--dest",
        dest.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    fetch(&args).await
}

fn assert_fetched(output: &Output, dest: &Path) {
    assert!(output.status.success(), "fetch failed: {}", stderr(output));
    assert_eq!(
        std::fs::read(dest.join("model.onnx")).unwrap(),
        model_bytes(),
        "the fetched model differs"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("pinserve.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"], "m");
    assert_eq!(manifest["version"], "1");
    assert_eq!(manifest["files"][0]["sha256"], sha256_hex(&model_bytes()));
    let leftovers: Vec<_> = std::fs::read_dir(dest)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".pinserve"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

fn assert_nothing_servable(dest: &Path) {
    assert!(
        !dest.join("model.onnx").exists(),
        "a model was left in place"
    );
    assert!(
        !dest.join("pinserve.json").exists(),
        "a manifest was written"
    );
}

fn model_route() -> Route {
    Route::new(model_bytes())
}

fn sidecar_route() -> Route {
    Route::new(format!("{}  model.onnx\n", sha256_hex(&model_bytes())))
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connections_resume_with_range_requests() {
    let server = FaultyServer::start([
        (
            MODEL,
            model_route().script([Reply::DropAfter(5000), Reply::DropAfter(3000)]),
        ),
        (SIDECAR, sidecar_route()),
    ])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let output = fetch_version(&server, dest.path(), &[]).await;
    assert_fetched(&output, dest.path());
    assert_eq!(
        server.ranges(MODEL),
        [
            None,
            Some("bytes=5000-".to_owned()),
            Some("bytes=8000-".to_owned())
        ]
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("fetched m version 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_and_rate_limits_are_retried_honouring_retry_after() {
    let server = FaultyServer::start([
        (
            MODEL,
            model_route().script([
                Reply::Status(500, "{}", vec![]),
                Reply::Status(429, "{}", vec![("retry-after", "1")]),
            ]),
        ),
        (SIDECAR, sidecar_route()),
    ])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let output = fetch_version(&server, dest.path(), &[]).await;
    assert_fetched(&output, dest.path());
    assert_eq!(server.ranges(MODEL).len(), 3);
    let waits: Vec<_> = stderr(&output)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["message"] == "download interrupted; retrying")
        .map(|entry| entry["retry_in"].clone())
        .collect();
    assert_eq!(waits.len(), 2, "{}", stderr(&output));
    assert_eq!(waits[1], "1s", "Retry-After: 1 was not honoured");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_abandoned_and_resumed() {
    let server = FaultyServer::start([
        (
            MODEL,
            model_route().script([Reply::StallAfter(4000, Duration::from_secs(60))]),
        ),
        (SIDECAR, sidecar_route()),
    ])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let output = fetch_version(&server, dest.path(), &["--fetch-stall-timeout", "1s"]).await;
    assert_fetched(&output, dest.path());
    assert_eq!(server.ranges(MODEL), [None, Some("bytes=4000-".to_owned())]);
    assert!(stderr(&output).contains("stalled"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_ranges_gets_the_file_from_the_start() {
    let server = FaultyServer::start([
        (
            MODEL,
            model_route()
                .ignoring_ranges()
                .script([Reply::DropAfter(6000)]),
        ),
        (SIDECAR, sidecar_route()),
    ])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let output = fetch_version(&server, dest.path(), &[]).await;
    assert_fetched(&output, dest.path());
    assert_eq!(server.ranges(MODEL), [None, Some("bytes=6000-".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_bytes_are_refused_and_never_left_in_place() {
    let server = FaultyServer::start([
        (MODEL, Route::new(b"not the model you pinned".to_vec())),
        (SIDECAR, sidecar_route()),
    ])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let output = fetch_version(&server, dest.path(), &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("model.onnx"), "{message}");
    assert!(
        message.contains(&sha256_hex(&model_bytes())),
        "the expected digest is named: {message}"
    );
    assert!(
        message.contains(&sha256_hex(b"not the model you pinned")),
        "the found digest is named: {message}"
    );
    assert!(message.contains("sidecar model.onnx.sha256"), "{message}");
    assert_nothing_servable(dest.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_digest_takes_precedence_and_is_enforced() {
    let server = FaultyServer::start([(MODEL, model_route()), (SIDECAR, sidecar_route())]).await;
    let dest = tempfile::tempdir().unwrap();
    let wrong = sha256_hex(b"something else");
    let output = fetch_version(&server, dest.path(), &["--model-sha256", &wrong]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("from --model-sha256"),
        "{}",
        stderr(&output)
    );
    assert_nothing_servable(dest.path());
    let right = sha256_hex(&model_bytes());
    let output = fetch_version(&server, dest.path(), &["--model-sha256", &right]).await;
    assert_fetched(&output, dest.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_and_unauthorised_fail_at_once() {
    let server = FaultyServer::start([(
        "/locked/1/model.onnx",
        model_route().script([Reply::Status(401, "{}", vec![])]),
    )])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let missing = server.url("/m/1");
    let output = fetch(&[
        "--model-uri",
        &missing,
        "--dest",
        dest.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("404"), "{}", stderr(&output));
    assert_eq!(server.ranges(MODEL).len(), 1, "a 404 is not retried");

    let locked = server.url("/locked/1");
    let output = fetch(&[
        "--model-uri",
        &locked,
        "--dest",
        dest.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("401"), "{}", stderr(&output));
    assert_eq!(
        server.ranges("/locked/1/model.onnx").len(),
        1,
        "a 401 is not retried"
    );
    assert_nothing_servable(dest.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_are_bounded_and_so_is_the_whole_fetch() {
    let unavailable = || Reply::Status(503, "{}", vec![]);
    let server = FaultyServer::start([
        (
            MODEL,
            model_route().script(std::iter::repeat_with(unavailable).take(50)),
        ),
        (SIDECAR, sidecar_route()),
        (
            "/slow/1/model.onnx",
            model_route().script(std::iter::repeat_n(
                Reply::StallAfter(100, Duration::from_secs(60)),
                50,
            )),
        ),
    ])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let output = fetch_version(&server, dest.path(), &["--fetch-retries", "2"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("gave up after 2 retries"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.ranges(MODEL).len(), 3);

    let slow = server.url("/slow/1");
    let output = fetch(&[
        "--model-uri",
        &slow,
        "--dest",
        dest.path().to_str().unwrap(),
        "--fetch-retries",
        "100",
        "--fetch-stall-timeout",
        "1s",
        "--fetch-timeout",
        "3s",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("did not finish within 3s"),
        "{}",
        stderr(&output)
    );
    assert_nothing_servable(dest.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verified_download_is_reused_and_a_tampered_one_replaced() {
    let server = FaultyServer::start([(MODEL, model_route()), (SIDECAR, sidecar_route())]).await;
    let dest = tempfile::tempdir().unwrap();
    assert_fetched(&fetch_version(&server, dest.path(), &[]).await, dest.path());
    let output = fetch_version(&server, dest.path(), &[]).await;
    assert_fetched(&output, dest.path());
    assert_eq!(
        server.ranges(MODEL).len(),
        1,
        "a verified download is not fetched again"
    );
    assert!(stderr(&output).contains("reusing the verified earlier download"));

    std::fs::write(dest.path().join("model.onnx"), b"corrupted on disk").unwrap();
    assert_fetched(&fetch_version(&server, dest.path(), &[]).await, dest.path());
    assert_eq!(
        server.ranges(MODEL).len(),
        2,
        "a tampered download is fetched again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_never_appear_in_errors() {
    let server = FaultyServer::start([]).await;
    let dest = tempfile::tempdir().unwrap();
    let uri = format!(
        "http://alice:hunter2@{}/m/1/model.onnx?token=s3cret",
        server.address
    );
    let output = fetch(&["--model-uri", &uri, "--dest", dest.path().to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        !message.contains("hunter2") && !message.contains("alice") && !message.contains("s3cret"),
        "{message}"
    );

    let oauth = server.url("/m/1/model.onnx?client_secret=hunter2&code=s3cret");
    let unparsable = "https://alice:hunter2@host:99999/m/1/model.onnx";
    for uri in [oauth.as_str(), unparsable] {
        let output = fetch(&["--model-uri", uri, "--dest", dest.path().to_str().unwrap()]).await;
        assert_eq!(output.status.code(), Some(1), "{uri}");
        let message = stderr(&output);
        assert!(
            !message.contains("hunter2") && !message.contains("s3cret"),
            "{uri}: {message}"
        );
    }
}

/// A fake MLflow: metadata answers like MLflow 3's, but the artifact listing is hostile.
fn fake_mlflow(listing: serde_json::Value) -> Vec<(&'static str, Route)> {
    vec![
        (
            "/api/2.0/mlflow/model-versions/get",
            Route::json(
                json!({"model_version": {"name": "m", "version": "1", "source": "models:/m-1", "tags": []}}),
            ),
        ),
        (
            "/api/2.0/mlflow/model-versions/get-download-uri",
            Route::json(json!({"artifact_uri": "mlflow-artifacts:/1/models/m-1/artifacts"})),
        ),
        ("/api/2.0/mlflow-artifacts/artifacts", Route::json(listing)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_that_climb_out_of_the_destination_are_refused() {
    for evil in ["../../escaped", "/etc/escaped", "pinserve.json"] {
        let server = FaultyServer::start(fake_mlflow(
            json!({"files": [{"path": evil, "is_dir": false, "file_size": 3}]}),
        ))
        .await;
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        let registry = server.url("");
        let output = fetch(&[
            "--model-uri",
            "models:/m/1",
            "--registry-uri",
            &registry,
            "--dest",
            dest.to_str().unwrap(),
        ])
        .await;
        assert_eq!(output.status.code(), Some(1), "{evil}");
        assert!(
            stderr(&output).contains("unsafe artifact path"),
            "{evil}: {}",
            stderr(&output)
        );
        assert!(!parent.path().join("escaped").exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_registry_version_names_model_version_and_registry() {
    let server = FaultyServer::start([(
        "/api/2.0/mlflow/model-versions/get",
        Route::json(json!({})).script([Reply::Status(
            404,
            r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version (name=m, version=9) not found"}"#,
            vec![],
        )]),
    )])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let registry = server.url("");
    let output = fetch(&[
        "--model-uri",
        "models:/m/9",
        "--registry-uri",
        &registry,
        "--dest",
        dest.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("models:/m/9"), "{message}");
    assert!(message.contains(&server.address.to_string()), "{message}");
    assert!(message.contains("RESOURCE_DOES_NOT_EXIST"), "{message}");
    let gets = server
        .seen()
        .into_iter()
        .filter(|seen| seen.path == "/api/2.0/mlflow/model-versions/get")
        .count();
    assert_eq!(gets, 1, "a 404 is not retried");
}

/// `serve --model-uri` fetches in-process: `/health` says loading meanwhile, then the served
/// model answers and the fetch shows in the metrics.
#[tokio::test(flavor = "multi_thread")]
async fn serve_fetches_in_process_while_health_says_loading() {
    let server = FaultyServer::start([
        (
            MODEL,
            model_route().script([Reply::StallAfter(1000, Duration::from_secs(60))]),
        ),
        (SIDECAR, sidecar_route()),
    ])
    .await;
    let cache = tempfile::tempdir().unwrap();
    let uri = server.url("/m/1");
    let serving = Server::start(&[
        "--model-uri",
        &uri,
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--fetch-stall-timeout",
        "2s",
    ]);
    let (status, health) = serving.get("/health").await;
    assert_eq!((status, health["status"].as_str()), (503, Some("loading")));
    serving.wait_ready().await;
    assert_eq!(
        serving
            .post_json("/v2/models/m/versions/1/infer", &tabular_request())
            .await
            .0,
        200
    );
    assert_eq!(server.ranges(MODEL), [None, Some("bytes=1000-".to_owned())]);
    assert_eq!(
        std::fs::read(cache.path().join("m/1/model.onnx")).unwrap(),
        model_bytes()
    );
    let metrics = serving.metrics().await;
    let version = [("model", "m"), ("version", "1")];
    assert!(
        find_sample(&metrics, "pinserve_fetch_bytes_total", &version).is_some(),
        "{metrics}"
    );
    let ok = [version[0], version[1], ("outcome", "ok")];
    assert_eq!(
        find_sample(&metrics, "pinserve_fetch_duration_seconds_count", &ok),
        Some(1.0)
    );
    assert!(metrics.contains(&format!(r#"sha256="{}""#, sha256_hex(&model_bytes()))));
}

/// A digest nothing has: a pin that no download can satisfy.
fn unsatisfiable_pin() -> String {
    "0".repeat(64)
}

fn assert_refused_by_the_pin(message: &str) {
    assert!(
        message.contains(&unsatisfiable_pin()) && message.contains("from --model-sha256"),
        "the pin's mismatch is named: {message}"
    );
    assert!(
        !message.contains("reusing the verified earlier download"),
        "{message}"
    );
}

/// Fetches the fixture tabular_mlp version 1 from its local model repository into `dest`.
async fn fetch_local(dest: &Path, extra: &[&str]) -> Output {
    let local = fixtures().join("tabular_mlp/1");
    let mut args = vec![
        "--model-uri",
        local.to_str().unwrap(),
        "--model",
        "m",
        "--version",
        "1",
        "--dest",
        dest.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    fetch(&args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_pin_is_enforced_on_an_earlier_download() {
    let dest = tempfile::tempdir().unwrap();
    assert_fetched(&fetch_local(dest.path(), &[]).await, dest.path());
    let right = sha256_hex(&model_bytes());
    let output = fetch_local(dest.path(), &["--model-sha256", &right]).await;
    assert_fetched(&output, dest.path());
    assert!(stderr(&output).contains("reusing the verified earlier download"));
    let pin = unsatisfiable_pin();
    let output = fetch_local(dest.path(), &["--model-sha256", &pin]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_refused_by_the_pin(&stderr(&output));
    assert_nothing_servable(dest.path());
}

/// The base manifest passes `--model-sha256=$(MODEL_SHA256)` with MODEL_SHA256 empty where a
/// service pins no digest: an empty value pins nothing, as no flag does.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_pin_pins_nothing() {
    let dest = tempfile::tempdir().unwrap();
    let output = fetch_local(dest.path(), &["--model-sha256="]).await;
    assert_fetched(&output, dest.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_enforces_a_changed_pin_on_its_cache() {
    let server = FaultyServer::start([(MODEL, model_route()), (SIDECAR, sidecar_route())]).await;
    let cache = tempfile::tempdir().unwrap();
    let uri = server.url("/m/1");
    let args = [
        "--model-uri",
        &uri,
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    Server::start(&args).wait_ready().await;
    assert_eq!(server.ranges(MODEL).len(), 1);

    let pin = unsatisfiable_pin();
    let mut pinned_args = args.to_vec();
    pinned_args.extend(["--model-sha256", &pin]);
    let pinned = Server::start(&pinned_args);
    let health = pinned.wait_for_health("failed").await;
    let error = health["error"].as_str().unwrap();
    assert!(error.contains("does not match"), "{health}");
    assert_refused_by_the_pin(error);
    assert_eq!(
        server.ranges(MODEL).len(),
        2,
        "the cache contradicts the pin, so the model is fetched again"
    );
}

/// Fetches `uri` into a fresh directory with `--fetch-timeout 2s`; the fetch must fail with
/// the timeout's error and leave nothing servable.
async fn assert_times_out(uri: &str, extra: &[&str]) {
    let dest = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--model-uri",
        uri,
        "--dest",
        dest.path().to_str().unwrap(),
        "--fetch-timeout",
        "2s",
    ];
    args.extend_from_slice(extra);
    let output = fetch(&args).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("did not finish within 2s (--fetch-timeout)"),
        "{message}"
    );
    assert_nothing_servable(dest.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_fails_the_fetch_within_its_timeout() {
    let server = SilentServer::start().await;
    assert_times_out(&server.url(MODEL), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_sidecar_fails_within_the_timeout_and_stalls_like_a_body() {
    let server = FaultyServer::start([
        (MODEL, model_route()),
        (SIDECAR, sidecar_route().always(Reply::Silent)),
    ])
    .await;
    assert_times_out(&server.url("/m/1"), &[]).await;

    let dest = tempfile::tempdir().unwrap();
    let quick = ["--fetch-stall-timeout", "1s", "--fetch-retries", "0"];
    let output = fetch_version(&server, dest.path(), &quick).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("no bytes for 1s (--fetch-stall-timeout)"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_mlflow_listing_fails_within_the_timeout() {
    let server = FaultyServer::start(fake_mlflow(
        json!({"files": [{"path": "deeper", "is_dir": true}]}),
    ))
    .await;
    let registry = server.url("");
    assert_times_out("models:/m/1", &["--registry-uri", &registry]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reports_failed_when_the_registry_stays_silent() {
    let server = SilentServer::start().await;
    let cache = tempfile::tempdir().unwrap();
    let uri = server.url(MODEL);
    let serving = Server::start(&[
        "--model-uri",
        &uri,
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--fetch-timeout",
        "2s",
    ]);
    let health = serving.wait_for_health("failed").await;
    assert!(
        health["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 2s"),
        "{health}"
    );
}

/// Fetches from a server whose `path` streams endlessly, and returns the error.
async fn refused_endless(
    path: &'static str,
    routes: Vec<(&'static str, Route)>,
    uri: &str,
    extra: &[&str],
) -> String {
    let mut routes = routes;
    routes.retain(|(route, _)| *route != path);
    routes.push((path, Route::new(Vec::new()).always(Reply::Endless)));
    let server = FaultyServer::start(routes).await;
    let dest = tempfile::tempdir().unwrap();
    let uri = uri.replace("SERVER", &server.url(""));
    let mut args = vec!["--model-uri", &uri, "--dest", dest.path().to_str().unwrap()];
    let registry = server.url("");
    if uri.starts_with("models:/") {
        args.extend(["--registry-uri", &registry]);
    }
    args.extend_from_slice(extra);
    let output = fetch(&args).await;
    assert_eq!(output.status.code(), Some(1), "{path}: {}", stderr(&output));
    assert_nothing_servable(dest.path());
    let leftovers: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with(".pinserve-partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{path}: partial files left: {leftovers:?}"
    );
    stderr(&output)
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_sidecars_mlmodels_and_registry_answers_are_refused_at_their_limits() {
    let sidecar = refused_endless(SIDECAR, vec![(MODEL, model_route())], "SERVER/m/1", &[]).await;
    assert!(sidecar.contains("larger than 1048576 bytes"), "{sidecar}");

    let listing = json!({"files": [
        {"path": "MLmodel", "is_dir": false, "file_size": 10},
        {"path": "model.onnx", "is_dir": false, "file_size": 10},
    ]});
    let mlmodel_path = "/api/2.0/mlflow-artifacts/artifacts/1/models/m-1/artifacts/MLmodel";
    let mlmodel = refused_endless(
        mlmodel_path,
        fake_mlflow(listing.clone()),
        "models:/m/1",
        &[],
    )
    .await;
    assert!(mlmodel.contains("larger than 1048576 bytes"), "{mlmodel}");

    let answer_path = "/api/2.0/mlflow/model-versions/get";
    let answer = refused_endless(answer_path, fake_mlflow(listing), "models:/m/1", &[]).await;
    assert!(answer.contains("larger than 16777216 bytes"), "{answer}");
}

/// Fetches `models:/m/1` from a fake MLflow (a real one answers JSON and keeps what it is given
/// whole: these faults have to be injected) and returns the error.
async fn refused_by_fake_mlflow(routes: Vec<(&'static str, Route)>, extra: &[&str]) -> String {
    let server = FaultyServer::start(routes).await;
    let dest = tempfile::tempdir().unwrap();
    let registry = server.url("");
    let mut args = vec!["--model-uri", "models:/m/1", "--registry-uri", &registry];
    args.extend(["--dest", dest.path().to_str().unwrap()]);
    args.extend_from_slice(extra);
    let output = fetch(&args).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_nothing_servable(dest.path());
    stderr(&output)
}

/// A broken `MLmodel` is refused at once, and an answer that is not JSON (a proxy's error page)
/// is retried, then refused; both name what failed and the parser's reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_mlmodel_and_an_answer_that_is_not_json_are_refused_with_their_cause() {
    let listing = json!({"files": [
        {"path": "MLmodel", "is_dir": false, "file_size": 18},
        {"path": "model.onnx", "is_dir": false, "file_size": 10},
    ]});
    let mlmodel_path = "/api/2.0/mlflow-artifacts/artifacts/1/models/m-1/artifacts/MLmodel";
    let mut routes = fake_mlflow(listing.clone());
    routes.push((mlmodel_path, Route::new("flavors: [unclosed")));
    let broken = refused_by_fake_mlflow(routes, &[]).await;
    assert!(broken.contains("cannot read MLmodel: "), "{broken}");
    assert!(!broken.contains("retrying"), "{broken}");

    let mut routes = fake_mlflow(listing);
    routes.retain(|(path, _)| *path != "/api/2.0/mlflow/model-versions/get");
    routes.push((
        "/api/2.0/mlflow/model-versions/get",
        Route::new("<html>bad gateway</html>"),
    ));
    let unreadable = refused_by_fake_mlflow(routes, &["--fetch-retries", "1"]).await;
    assert!(
        unreadable.contains("gave up after 1 retries: ")
            && unreadable.contains("model-versions/get?name=m&version=1: unreadable answer: ")
            && unreadable.contains("expected value"),
        "{unreadable}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_model_body_is_cut_at_fetch_max_bytes() {
    let message = refused_endless(
        MODEL,
        vec![],
        "SERVER/m/1",
        &["--fetch-max-bytes", "100000"],
    )
    .await;
    assert!(
        message.contains("larger than 100000 bytes (--fetch-max-bytes"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_presigned_model_url_is_fetched_with_its_query_and_no_sidecar_is_asked_for() {
    let server = FaultyServer::start([
        (MODEL, model_route().requiring_query("X-Amz-Signature=GOOD")),
        (
            SIDECAR,
            sidecar_route().requiring_query("X-Amz-Signature=GOOD"),
        ),
    ])
    .await;
    let dest = tempfile::tempdir().unwrap();
    let uri = server.url("/m/1/model.onnx?X-Amz-Signature=GOOD");
    let output = fetch(&["--model-uri", &uri, "--dest", dest.path().to_str().unwrap()]).await;
    assert_fetched(&output, dest.path());
    let seen = server.seen();
    assert!(
        seen.iter().all(|request| request.path == MODEL
            && request.query.as_deref() == Some("X-Amz-Signature=GOOD")),
        "only the presigned model URL is asked for: {seen:?}"
    );
    assert!(
        !stderr(&output).contains("GOOD"),
        "the signature is redacted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_paths_models_versions_and_flags_are_named() {
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path().to_str().unwrap();
    let repository = fixtures();
    let root = repository.to_str().unwrap();
    let in_repository = |model, version| {
        vec![
            "--model-repository",
            root,
            "--model",
            model,
            "--version",
            version,
        ]
    };
    let cases: [(Vec<&str>, &[&str]); 6] = [
        (
            vec!["--model-uri", "/does/not/exist"],
            &["/does/not/exist: no such file or directory"],
        ),
        (
            in_repository("tabular_mlp", "9"),
            &[
                "model 'tabular_mlp' version '9' not found: nothing at",
                "its versions there: 1",
            ],
        ),
        (
            in_repository("embedding_lookup", "7"),
            &["its versions there: 1, 2, 3"],
        ),
        (
            in_repository("nope", "1"),
            &["model 'nope' is not in the model repository", "tabular_mlp"],
        ),
        (
            vec!["--model-repository", root, "--model", "tabular_mlp"],
            &["--version is missing: --model tabular_mlp needs --version"],
        ),
        (
            vec![
                "--registry-uri",
                "http://127.0.0.1:9",
                "--model",
                "tabular_mlp",
            ],
            &["--version is missing"],
        ),
    ];
    for (mut args, wanted) in cases {
        args.extend(["--dest", dest]);
        let output = fetch(&args).await;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let message = stderr(&output);
        for part in wanted {
            assert!(message.contains(part), "{args:?}: {part}: {message}");
        }
    }
}
