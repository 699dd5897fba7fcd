//! `serve --model-uri --cache-dir` against the real MLflow tracking server (started by
//! tests/support/services.sh): versions served one after another are kept up to
//! `--cache-max-versions` or `--cache-max-bytes`, the least recently used evicted first, and a
//! version another process serves is never evicted; two servers that want one version at once
//! fetch it once.

mod common;

use std::{path::Path, time::Duration};

use common::{
    Server,
    faulty::{FaultyServer, Reply, Route},
    fixtures, run_fetch,
    services::{mlflow_uri, registered},
    stderr,
};

/// `serve --model-uri URI --cache-dir CACHE EXTRA...` from the open MLflow server, ready.
async fn serve(uri: &str, cache: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--model-uri", uri, "--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start_with_env(&args, &[("MLFLOW_TRACKING_URI", mlflow_uri())]);
    server.wait_ready().await;
    server
}

/// The version directories (`NAME/VERSION`) in the cache, sorted.
fn cached_versions(cache: &Path) -> Vec<String> {
    let mut versions = Vec::new();
    for name in std::fs::read_dir(cache).unwrap().map(Result::unwrap) {
        let name = name.file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue;
        }
        for version in std::fs::read_dir(cache.join(&name))
            .unwrap()
            .map(Result::unwrap)
        {
            let version = version.file_name().into_string().unwrap();
            if !version.starts_with('.') {
                versions.push(format!("{name}/{version}"));
            }
        }
    }
    versions.sort();
    versions
}

fn size_of_tree(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                size_of_tree(&entry.path())
            } else {
                metadata.len()
            }
        })
        .sum()
}

/// The logged model register_models.py logged in no registered model, and its id.
fn logged_model() -> (String, String) {
    let id = registered()["mlflow_logged_models"]["good"]["model_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (format!("models:/{id}"), id)
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_beyond_the_limit_are_evicted_least_recently_used_first() {
    let cache = tempfile::tempdir().unwrap();
    let limit = ["--cache-max-versions", "2"];
    let (logged_uri, logged_id) = logged_model();
    drop(serve("models:/tabular-mlp/1", cache.path(), &limit).await);
    drop(serve("models:/churn-pipeline/1", cache.path(), &limit).await);
    // tabular-mlp/1 is used again, so churn-pipeline/1 is now the least recently used.
    drop(serve("models:/tabular-mlp/1", cache.path(), &limit).await);
    assert_eq!(
        cached_versions(cache.path()),
        ["churn-pipeline/1", "tabular-mlp/1"]
    );

    let third = serve(&logged_uri, cache.path(), &limit).await;
    assert_eq!(
        cached_versions(cache.path()),
        [
            format!("tabular-logged/{logged_id}"),
            "tabular-mlp/1".to_owned()
        ]
    );
    let metrics = third.metrics().await;
    assert_eq!(
        common::metrics::find_sample(&metrics, "pinserve_cache_evictions_total", &[]),
        Some(1.0),
        "{metrics}"
    );
    let evicted = third
        .logs()
        .into_iter()
        .find(|entry| entry["message"] == "evicted the least recently used cached version");
    let evicted = evicted.expect("the eviction is logged");
    assert_eq!(
        (evicted["model"].as_str(), evicted["version"].as_str()),
        (Some("churn-pipeline"), Some("1"))
    );
    drop(third);

    // A logged model's earlier download is found by its id and reused without a second fetch.
    let again = serve(&logged_uri, cache.path(), &limit).await;
    let reused = again
        .logs()
        .into_iter()
        .any(|entry| entry["message"] == "reusing the verified earlier download");
    assert!(reused, "{:?}", again.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_another_process_serves_is_never_evicted() {
    let cache = tempfile::tempdir().unwrap();
    let one = ["--cache-max-versions", "1"];
    let holder = serve("models:/tabular-mlp/1", cache.path(), &one).await;
    let second = serve("models:/churn-pipeline/1", cache.path(), &one).await;
    assert_eq!(
        cached_versions(cache.path()),
        ["churn-pipeline/1", "tabular-mlp/1"],
        "the version the first server serves stays"
    );
    let skipped = second
        .logs()
        .into_iter()
        .any(|entry| entry["message"] == "not evicting a cached version in use");
    assert!(skipped, "{:?}", second.logs());
    let (status, _) = holder.get("/health").await;
    assert_eq!(status, 200);
    drop(second);
    drop(holder);

    let third = serve("models:/tabular-mlp/2", cache.path(), &one).await;
    assert_eq!(cached_versions(cache.path()), ["tabular-mlp/2"]);
    drop(third);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bytes_limit_evicts_until_the_cache_holds_no_more() {
    let cache = tempfile::tempdir().unwrap();
    let unlimited = ["--cache-max-versions", "0"];
    drop(serve("models:/tabular-mlp/1", cache.path(), &unlimited).await);
    drop(serve("models:/churn-pipeline/1", cache.path(), &unlimited).await);
    let churn = size_of_tree(&cache.path().join("churn-pipeline/1"));
    // The size tabular-mlp/2 will take in the cache: the same files, fetched elsewhere.
    let measured = tempfile::tempdir().unwrap();
    let env = [("MLFLOW_TRACKING_URI", mlflow_uri())];
    let dest = measured.path().to_str().unwrap();
    let output = run_fetch(
        &["--model-uri", "models:/tabular-mlp/2", "--dest", dest],
        &env,
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let negated = size_of_tree(measured.path());

    let budget = (churn + negated).to_string();
    let limited = ["--cache-max-versions", "0", "--cache-max-bytes", &budget];
    let third = serve("models:/tabular-mlp/2", cache.path(), &limited).await;
    assert_eq!(
        cached_versions(cache.path()),
        ["churn-pipeline/1", "tabular-mlp/2"]
    );
    drop(third);

    let smallest = ["--cache-max-bytes", "1"];
    drop(serve("models:/tabular-mlp/2", cache.path(), &smallest).await);
    assert_eq!(
        cached_versions(cache.path()),
        ["tabular-mlp/2"],
        "the served version stays, larger than the limit as it is"
    );
}

/// The one fake server here: a real registry cannot be told to stall a download, which is what
/// makes two servers' fetches of one version overlap.
#[tokio::test(flavor = "multi_thread")]
async fn two_servers_starting_at_once_on_one_version_fetch_it_once() {
    let model = std::fs::read(fixtures().join("tabular_mlp/1/model.onnx")).unwrap();
    let stalled = Route::new(model).script([Reply::StallAfter(4000, Duration::from_secs(60))]);
    let registry = FaultyServer::start([("/m/1/model.onnx", stalled)]).await;
    let cache = tempfile::tempdir().unwrap();
    let uri = registry.url("/m/1");
    let start = || {
        let args = [
            "--model-uri",
            uri.as_str(),
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--fetch-stall-timeout",
            "1s",
        ];
        Server::start(&args)
    };
    let (first, second) = (start(), start());
    first.wait_ready().await;
    second.wait_ready().await;
    assert_eq!(
        registry.ranges("/m/1/model.onnx"),
        [None, Some("bytes=4000-".to_owned())],
        "one server fetched (stalled, then resumed); the other waited and fetched nothing"
    );
    let reused = [&first, &second].into_iter().filter(|server| {
        server
            .logs()
            .iter()
            .any(|entry| entry["message"] == "reusing the verified earlier download")
    });
    assert_eq!(reused.count(), 1);
    assert_eq!(cached_versions(cache.path()), ["m/1"]);
}
