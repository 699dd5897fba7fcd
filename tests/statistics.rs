//! The statistics extension over HTTP, beside Triton's client (tests/triton_client.rs): its three
//! paths, a failed inference counted as a failure and not as a model call, and an unknown model
//! or version refused as elsewhere.

mod common;

use common::Server;
use serde_json::json;

fn ids(values: &[i64]) -> serde_json::Value {
    json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [values.len()], "data": values}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn successes_failures_and_rows_are_counted_on_every_path() {
    // Version 2's table is pruned to 95 ids: id 97 fails inside ONNX Runtime.
    let server = Server::start_fixture("embedding_lookup", "2", &[]);
    server.wait_ready().await;
    let infer = "/v2/models/embedding_lookup/infer";
    for body in [ids(&[1, 2, 3]), ids(&[4]), ids(&[97])] {
        server.post_json(infer, &body).await;
    }
    for path in [
        "/v2/models/stats",
        "/v2/models/embedding_lookup/stats",
        "/v2/models/embedding_lookup/versions/2/stats",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let stats = &body["model_stats"][0];
        assert_eq!(stats["name"], "embedding_lookup");
        assert_eq!(stats["version"], "2");
        assert_eq!(stats["inference_stats"]["success"]["count"], 2, "{body}");
        assert_eq!(stats["inference_stats"]["fail"]["count"], 1, "{body}");
        assert_eq!(stats["inference_count"], 4, "{body}");
        assert_eq!(stats["execution_count"], 2, "{body}");
    }
    for (path, status) in [
        ("/v2/models/other/stats", 404),
        ("/v2/models/embedding_lookup/versions/9/stats", 404),
    ] {
        let (found, body) = server.get(path).await;
        assert_eq!(found, status, "{path}: {body}");
    }
}
