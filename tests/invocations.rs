//! MLflow's scoring protocol: `mlflow models serve` (MLflow 3.17.2, `.venv-services`) and
//! pinserve serve the same model, and tests/support/mlflow_scoring.py asks both the same
//! questions, verbatim and through MLflow's own `ScoringServerClient`. Answers are compared field
//! by field (floats within a tolerance): every JSON form, CSV, `params` (ignored by both, the
//! model having no params schema), bad input (the same status class, and pinserve's message
//! names the problem), `/ping` and `/version`.
//!
//! Where MLflow's ONNX flavor fails on a data frame (a multi-input model whose inputs are
//! `[N, 1]`, outputs of different widths), pinserve answers, in the records form MLflow uses
//! for data frames; those cases check MLflow's refusal and pinserve's answer against the
//! same rows sent as tensors.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::{
    Server, fixtures,
    services::{mlflow_uri, serve_from_mlflow, services_python},
};
use serde_json::{Value, json};

/// Runs the driver on `job`; `env` reaches MLflow's server (its tracking URI for `models:/`).
fn ask_both(job: &Value, env: &[(&str, String)]) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/mlflow_scoring.py"
    );
    // The tests' own HOME: MLflow and ONNX Runtime keep nothing in the developer's caches.
    let mut child = Command::new(services_python())
        .arg(script)
        .env_remove("XDG_CACHE_HOME")
        .envs(common::isolated_env())
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the MLflow driver");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(job.to_string().as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the MLflow driver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Value = serde_json::from_slice(&output.stdout).unwrap();
    answers["answers"].clone()
}

fn fixture_job(server: &Server, fixture: &str, requests: Vec<Value>, client: Value) -> Value {
    let onnx = fixtures().join(fixture).join("1").join("model.onnx");
    json!({
        "pinserve": format!("http://{}", server.address),
        "onnx": onnx,
        "requests": requests,
        "client": client,
    })
}

fn request(name: &str, content_type: &str, body: impl ToString) -> Value {
    json!({"name": name, "content_type": content_type, "body": body.to_string()})
}

fn json_request(name: &str, body: Value) -> Value {
    request(name, "application/json", body)
}

fn csv(columns: &[String], rows: &[Vec<Value>]) -> String {
    let mut text = columns.join(",") + "\n";
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|cell| {
                cell.as_str()
                    .map_or_else(|| cell.to_string(), str::to_owned)
            })
            .collect();
        text += &(cells.join(",") + "\n");
    }
    text
}

/// MLflow's and pinserve's answers to one question.
fn pair<'a>(answers: &'a Value, name: &str) -> (&'a Value, &'a Value) {
    let both = &answers[name];
    assert!(both.is_object(), "no answers to '{name}': {answers}");
    (&both["mlflow"], &both["pinserve"])
}

fn assert_same(answers: &Value, name: &str) {
    let (mlflow, pinserve) = pair(answers, name);
    assert_eq!(pinserve["status"], mlflow["status"], "{name}: {pinserve}");
    assert!(
        mlflow.get("error").is_none(),
        "{name}: MLflow failed: {mlflow}"
    );
    assert_close(pinserve, mlflow, name);
}

/// Both refuse with the same status; pinserve's message names the problem, in MLflow's shape.
fn assert_both_refuse(answers: &Value, name: &str, problem: &str) {
    let (mlflow, pinserve) = pair(answers, name);
    assert_eq!(
        pinserve["status"], mlflow["status"],
        "{name}: {pinserve} vs {mlflow}"
    );
    assert!(
        pinserve["status"].as_u64().unwrap() >= 400,
        "{name}: {pinserve}"
    );
    if let Some(code) = mlflow["body"]["error_code"].as_str() {
        assert_eq!(pinserve["body"]["error_code"], code, "{name}: {pinserve}");
    }
    let message = pinserve["body"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(problem), "{name}: {pinserve}");
}

/// Equal JSON, but for numbers, which may differ in the last digits: MLflow writes float32
/// values widened to doubles, pinserve their shortest form.
fn assert_close(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            let tolerance = 1e-5 * g.abs().max(w.abs()) + 1e-6;
            assert!((g - w).abs() <= tolerance, "{at}: {g} != {w}");
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{at}: lengths of {got} and {want}");
            for (index, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(g, w, &format!("{at}[{index}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            let keys = |map: &serde_json::Map<String, Value>| map.keys().cloned().collect();
            let (g_keys, w_keys): (Vec<String>, Vec<String>) = (keys(g), keys(w));
            assert_eq!(g_keys, w_keys, "{at}: fields");
            for (key, value) in g {
                assert_close(value, &w[key], &format!("{at}.{key}"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

/// The records MLflow gives for a data frame, from the object of tensors it gives for `inputs`.
fn records_of(tensors: &Value) -> Value {
    let tensors = tensors.as_object().unwrap();
    let rows = tensors.values().next().unwrap().as_array().unwrap().len();
    let records: Vec<Value> = (0..rows)
        .map(|row| {
            let record = tensors.iter().map(|(name, tensor)| {
                let value = &tensor[row];
                let single = value.as_array().filter(|values| values.len() == 1);
                (
                    name.clone(),
                    single.map_or(value, |values| &values[0]).clone(),
                )
            });
            Value::Object(record.collect())
        })
        .collect();
    Value::Array(records)
}

/// MLflow refused `name`; pinserve answered it as the same rows sent as tensors (`inputs`).
fn assert_pinserve_answers_frame(answers: &Value, name: &str) {
    let (mlflow, pinserve) = pair(answers, name);
    assert_eq!(
        mlflow["status"], 400,
        "{name}: MLflow now answers: {mlflow}"
    );
    assert_eq!(pinserve["status"], 200, "{name}: {pinserve}");
    let (_, as_tensors) = pair(answers, "inputs");
    let expected = records_of(&as_tensors["body"]["predictions"]);
    assert_close(&pinserve["body"]["predictions"], &expected, name);
}

fn assert_probes(answers: &Value) {
    let (mlflow, pinserve) = pair(answers, "ping");
    assert_eq!(
        (&mlflow["status"], &pinserve["status"]),
        (&json!(200), &json!(200))
    );
    let (mlflow, pinserve) = pair(answers, "version");
    assert_eq!(mlflow["body"], "3.17.2", "the pinned MLflow answers");
    assert_eq!(pinserve["status"], 200);
    assert_eq!(pinserve["body"], env!("CARGO_PKG_VERSION"));
}

/// Two rows of `tabular_mlp`'s 32 features, not all alike.
fn features(width: usize) -> Vec<Vec<Value>> {
    (0..2)
        .map(|row| {
            (0..width)
                .map(|column| json!(((row * width + column) % 7) as f64 * 0.25 - 0.5))
                .collect()
        })
        .collect()
}

fn names(prefix: &str, width: usize) -> Vec<String> {
    (0..width).map(|index| format!("{prefix}{index}")).collect()
}

fn tabular_requests(columns: &[String], rows: &[Vec<Value>]) -> Vec<Value> {
    let records: Vec<Value> = rows
        .iter()
        .map(|row| Value::Object(columns.iter().cloned().zip(row.iter().cloned()).collect()))
        .collect();
    vec![
        json_request("inputs", json!({"inputs": rows})),
        json_request("inputs_by_name", json!({"inputs": {"features": rows}})),
        json_request("instances", json!({"instances": rows})),
        json_request(
            "dataframe_split",
            json!({"dataframe_split": {"columns": columns, "data": rows}}),
        ),
        json_request("dataframe_records", json!({"dataframe_records": records})),
        json_request(
            "params",
            json!({"inputs": rows, "params": {"temperature": 0.1, "top_k": 3}}),
        ),
        request("csv", "text/csv", csv(columns, rows)),
        request("csv_utf8", "text/csv; charset=utf-8", csv(columns, rows)),
        request("malformed", "application/json", r#"{"inputs": [[1,"#),
        json_request("wrong_type", json!({"inputs": [vec!["a"; 32]]})),
        json_request("a_list", json!([rows])),
        json_request("no_format", json!({"data": rows})),
        request("text_plain", "text/plain", json!({"inputs": rows})),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_input_model_answers_every_form_as_mlflow_serve_does() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let (columns, rows) = (names("f", 32), features(32));
    let client = json!([
        {"name": "client_ndarray", "kind": "ndarray", "data": rows},
        {"name": "client_list", "kind": "list", "data": rows},
        {"name": "client_dataframe", "kind": "dataframe", "columns": columns, "data": rows,
         "params": {"temperature": 0.1}},
    ]);
    let requests = tabular_requests(&columns, &rows);
    let answers = ask_both(&fixture_job(&server, "tabular_mlp", requests, client), &[]);
    for name in [
        "inputs",
        "inputs_by_name",
        "instances",
        "dataframe_split",
        "dataframe_records",
        "params",
        "csv",
        "csv_utf8",
        "client_ndarray",
        "client_list",
        "client_dataframe",
    ] {
        assert_same(&answers, name);
    }
    assert_both_refuse(&answers, "malformed", "malformed request body");
    assert_both_refuse(&answers, "wrong_type", "input 'features'");
    assert_both_refuse(&answers, "a_list", "exactly one of");
    assert_both_refuse(&answers, "no_format", "exactly one of");
    assert_both_refuse(&answers, "text_plain", "Content-Type 'text/plain'");
    assert_probes(&answers);
    // Measured as every inference route is; MLflow's probes are not.
    let metrics = server.metrics().await;
    for code in ["200", "400", "415"] {
        let series = format!("route=\"/invocations\",code=\"{code}\"");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    assert!(!metrics.contains("route=\"/ping\""), "{metrics}");
}

fn churn_rows() -> (Vec<String>, Vec<Vec<Value>>) {
    let columns = ["plan", "region", "tenure_months", "monthly_charges"].map(str::to_owned);
    let rows = vec![
        vec![json!("basic"), json!("eu"), json!(3.0), json!(20.5)],
        vec![json!("premium"), json!("apac"), json!(40.0), json!(99.25)],
    ];
    (columns.to_vec(), rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_bind_to_the_inputs_of_a_multi_input_model_by_name() {
    let server = Server::fixture("churn_pipeline", &[]).await;
    let (columns, rows) = churn_rows();
    let column = |at: usize| -> Vec<Value> { rows.iter().map(|row| json!([row[at]])).collect() };
    let tensors = json!({
        "plan": column(0), "region": column(1), "tenure_months": column(2), "monthly_charges": column(3)
    });
    let keyed: Vec<Value> = rows
        .iter()
        .map(|row| json!({"plan": [row[0]], "region": [row[1]], "tenure_months": [row[2]], "monthly_charges": [row[3]]}))
        .collect();
    let mut renamed = columns.clone();
    renamed[2] = "tenure".to_owned();
    let mut wrong_type = tensors.clone();
    wrong_type["tenure_months"] = json!([["three"], ["forty"]]);
    let requests = vec![
        json_request("inputs", json!({"inputs": tensors})),
        json_request("instances", json!({"instances": keyed})),
        json_request(
            "dataframe_split",
            json!({"dataframe_split": {"columns": columns, "data": rows}}),
        ),
        request("csv", "text/csv", csv(&columns, &rows)),
        json_request(
            "unknown_column",
            json!({"dataframe_split": {"columns": renamed, "data": rows}}),
        ),
        json_request("wrong_type", json!({"inputs": wrong_type})),
    ];
    let answers = ask_both(
        &fixture_job(&server, "churn_pipeline", requests, json!([])),
        &[],
    );
    assert_same(&answers, "inputs");
    assert_same(&answers, "instances");
    // MLflow feeds each column as a 1-D array to inputs of shape [N, 1], which ONNX Runtime
    // refuses; pinserve binds the column to its input.
    assert_pinserve_answers_frame(&answers, "dataframe_split");
    assert_pinserve_answers_frame(&answers, "csv");
    assert_both_refuse(&answers, "unknown_column", "unknown input 'tenure'");
    assert_both_refuse(&answers, "wrong_type", "input 'tenure_months'");
    assert_probes(&answers);
}

/// The first rows of `breast_cancer/test.csv`, without the target, as CSV text and as numbers.
fn breast_cancer_rows(count: usize) -> (Vec<String>, Vec<Vec<Value>>) {
    let text = std::fs::read_to_string(fixtures().join("breast_cancer/test.csv")).unwrap();
    let mut lines = text.lines();
    let mut columns: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(columns.pop().as_deref(), Some("target"));
    let rows = lines
        .take(count)
        .map(|line| {
            let cells = line.split(',').take(columns.len());
            cells
                .map(|cell| json!(cell.parse::<f64>().unwrap()))
                .collect()
        })
        .collect();
    (columns, rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_of_several_widths_answer_data_frames_in_records() {
    let server = Server::fixture("breast_cancer", &[]).await;
    let (columns, rows) = breast_cancer_rows(3);
    let requests = vec![
        json_request("inputs", json!({"inputs": rows})),
        json_request(
            "dataframe_split",
            json!({"dataframe_split": {"columns": columns, "data": rows}}),
        ),
        request("csv", "text/csv", csv(&columns, &rows)),
    ];
    let client = json!([{"name": "client_ndarray", "kind": "ndarray", "data": rows}]);
    let answers = ask_both(
        &fixture_job(&server, "breast_cancer", requests, client),
        &[],
    );
    assert_same(&answers, "inputs");
    assert_same(&answers, "client_ndarray");
    // MLflow flattens each output of a data frame's answer to one column: `label` has 3 values,
    // `probabilities` 6, and pandas refuses the frame. pinserve answers one record per row.
    assert_pinserve_answers_frame(&answers, "dataframe_split");
    assert_pinserve_answers_frame(&answers, "csv");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tensor_signature_answers_data_frames_as_tensors_as_mlflow_does() {
    let uri = "models:/churn-pipeline/1";
    let (server, _cache) = serve_from_mlflow(uri).await;
    let (columns, rows) = churn_rows();
    let records: Vec<Value> = rows
        .iter()
        .map(|row| Value::Object(columns.iter().cloned().zip(row.iter().cloned()).collect()))
        .collect();
    let job = json!({
        "pinserve": format!("http://{}", server.address),
        "model_uri": uri,
        "requests": [
            json_request("dataframe_split", json!({"dataframe_split": {"columns": columns, "data": rows}})),
            json_request("dataframe_records", json!({"dataframe_records": records})),
        ],
        "client": [{"name": "client_dataframe", "kind": "dataframe", "columns": columns, "data": rows}],
    });
    let answers = ask_both(&job, &[("MLFLOW_TRACKING_URI", mlflow_uri())]);
    for name in ["dataframe_split", "dataframe_records", "client_dataframe"] {
        assert_same(&answers, name);
    }
    let (_, pinserve) = pair(&answers, "dataframe_split");
    assert!(
        pinserve["body"]["predictions"]["label"].is_array(),
        "{pinserve}"
    );
}

/// scikit-learn classifiers converted with skl2onnx's defaults: MLflow's ONNX flavor answers a
/// ZipMap output as one `{label: probability}` object per row, and so does pinserve, for integer
/// and string class labels, to data frames and to tensors alike.
#[tokio::test(flavor = "multi_thread")]
async fn zipmap_classifiers_answer_their_probabilities_by_label_as_mlflow_does() {
    for fixture in ["zipmap_binary", "zipmap_iris"] {
        let server = Server::fixture(fixture, &[]).await;
        let inputs = &common::golden(fixture)["cases"][1]["request"]["inputs"][0];
        let rows: Vec<Value> = inputs["data"]
            .as_array()
            .unwrap()
            .chunks(4)
            .map(|row| json!(row))
            .collect();
        let columns = names("f", 4);
        let requests = vec![
            json_request(
                "dataframe_split",
                json!({"dataframe_split": {"columns": columns, "data": rows}}),
            ),
            json_request("instances", json!({"instances": rows})),
        ];
        let answers = ask_both(&fixture_job(&server, fixture, requests, json!([])), &[]);
        assert_same(&answers, "dataframe_split");
        assert_same(&answers, "instances");
        let (_, pinserve) = pair(&answers, "dataframe_split");
        let first = &pinserve["body"]["predictions"][0]["output_probability"];
        assert!(first.is_object(), "{fixture}: {pinserve}");
    }
}
