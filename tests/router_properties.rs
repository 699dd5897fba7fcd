//! Property test: random and mutated bodies thrown at the router (with a real ONNX Runtime
//! model behind it) only ever get documented statuses with a JSON error, and never leave the
//! server unhealthy.

mod common;

use std::sync::{Arc, OnceLock};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use common::{fixtures, golden};
use pinserve::{
    batch::{BatchConfig, Batcher},
    http::{AppState, ServingModel, router},
    metrics::ModelLabels,
    model::{self, DataType, Device, SessionOptions},
};
use proptest::{prelude::*, sample::select};
use serde_json::{Value, json};
use tower::ServiceExt;

const MAX_BODY_BYTES: usize = 8192;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The router serving a fixture, as `pinserve serve` builds it.
fn serving(model_name: &str) -> Router {
    let options = SessionOptions {
        intra_op_threads: 1,
        ..SessionOptions::default()
    };
    let path = fixtures().join(model_name).join("1/model.onnx");
    let model = model::load_and_warm_up(&path, &options, |signature| Ok(signature.warmup_inputs()))
        .unwrap();
    let labels = ModelLabels {
        model: model_name.to_owned(),
        version: "1".to_owned(),
    };
    let _guard = runtime().enter();
    let (batcher, worker) =
        Batcher::start(vec![Box::new(model)], &labels, BatchConfig::default()).unwrap();
    // The worker lives as long as the test process; nothing here waits for it.
    std::mem::forget(worker);
    let state = Arc::new(AppState::new(labels, MAX_BODY_BYTES, None));
    state.set_ready(ServingModel {
        batcher,
        device: Device::Cpu,
        load_seconds: 0.0,
        sha256: None,
        mlflow_signature: None,
        signed: None,
    });
    router(state)
}

async fn send(app: &Router, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

/// Sends `body` and checks the answer is documented, then that the server is still ready.
fn check(app: &Router, path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let (status, answer) = send(app, "POST", path, body).await;
        prop_assert!(
            [
                StatusCode::OK,
                StatusCode::BAD_REQUEST,
                StatusCode::PAYLOAD_TOO_LARGE
            ]
            .contains(&status),
            "undocumented status {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
        if status != StatusCode::OK {
            prop_assert!(
                answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{answer}"
            );
        }
        let (health, _) = send(app, "GET", "/health", Vec::new()).await;
        prop_assert_eq!(health, StatusCode::OK);
        Ok(())
    })
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Inputs built from the model's own names and datatypes, mixed with junk.
fn plausible_input(names: Vec<String>) -> impl Strategy<Value = Value> {
    let datatypes: Vec<String> = DataType::ALL
        .iter()
        .map(|dt| dt.as_str().to_owned())
        .collect();
    (
        prop_oneof![select(names), "\\PC{0,6}"],
        prop_oneof![select(datatypes), "\\PC{0,5}"],
        prop::collection::vec(prop_oneof![-2i64..6, Just(i64::MAX), Just(1 << 40)], 0..4),
        prop_oneof![arbitrary_json(), prop::collection::vec(arbitrary_json(), 0..16).prop_map(Value::from)],
    )
        .prop_map(|(name, datatype, shape, data)| json!({"name": name, "datatype": datatype, "shape": shape, "data": data}))
}

fn plausible_request(names: Vec<String>) -> impl Strategy<Value = Value> {
    let outputs = prop::option::of(prop::collection::vec(
        "\\PC{0,8}".prop_map(|n| json!({"name": n})),
        0..3,
    ));
    (
        prop::collection::vec(plausible_input(names), 0..6),
        outputs,
        prop::option::of("\\PC{0,8}"),
    )
        .prop_map(|(inputs, outputs, id)| {
            let mut request = json!({ "inputs": inputs });
            if let Some(outputs) = outputs {
                request["outputs"] = Value::from(outputs);
            }
            if let Some(id) = id {
                request["id"] = Value::from(id);
            }
            request
        })
}

/// A golden request with one field replaced by arbitrary JSON.
fn mutated_golden(model: &str) -> impl Strategy<Value = Value> {
    let requests: Vec<Value> = golden(model)["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["request"].clone())
        .collect();
    let fields = vec!["name", "datatype", "shape", "data"];
    (
        select(requests),
        any::<prop::sample::Index>(),
        select(fields),
        arbitrary_json(),
    )
        .prop_map(|(mut request, input, field, replacement)| {
            let inputs = request["inputs"].as_array_mut().unwrap();
            let index = input.index(inputs.len());
            inputs[index][field] = replacement;
            request
        })
}

fn any_body(model: &'static str, names: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let valid_prefix =
        (mutated_golden(model), any::<prop::sample::Index>()).prop_map(|(request, cut)| {
            let bytes = serde_json::to_vec(&request).unwrap();
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        });
    let requests: Vec<Vec<u8>> = golden(model)["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| serde_json::to_vec(&case["request"]).unwrap())
        .collect();
    prop_oneof![
        select(requests),
        prop::collection::vec(any::<u8>(), 0..512),
        arbitrary_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        plausible_request(names).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        mutated_golden(model).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        valid_prefix,
        prop::collection::vec(any::<u8>(), MAX_BODY_BYTES + 1..MAX_BODY_BYTES + 64),
    ]
}

fn input_names(model: &str) -> Vec<String> {
    golden(model)["cases"][0]["request"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| input["name"].as_str().unwrap().to_owned())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn churn_pipeline_answers_only_documented_statuses(
        body in any_body("churn_pipeline", input_names("churn_pipeline")),
        path in select(vec!["/v2/models/churn_pipeline/infer", "/predict", "/v1/models/churn_pipeline:predict"]),
    ) {
        static APP: OnceLock<Router> = OnceLock::new();
        check(APP.get_or_init(|| serving("churn_pipeline")), path, body)?;
    }

    #[test]
    fn all_dtypes_answers_only_documented_statuses(
        body in any_body("all_dtypes", input_names("all_dtypes")),
        path in select(vec!["/v2/models/all_dtypes/versions/1/infer", "/predict"]),
    ) {
        static APP: OnceLock<Router> = OnceLock::new();
        check(APP.get_or_init(|| serving("all_dtypes")), path, body)?;
    }
}
