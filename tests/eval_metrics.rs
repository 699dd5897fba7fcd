//! `pinserve::eval` against scikit-learn: the same predictions must give the same metrics to
//! 1e-6, computed by scikit-learn 1.9 in the fixtures' Python environment (`.venv`, or
//! `PINSERVE_TEST_PYTHON`; scripts/test.sh creates it).

mod common;

use std::{collections::BTreeMap, ffi::OsStr, path::Path};

use pinserve::{
    eval::{
        Evaluation, Label, Predictions, Task, TaskPlan, Truth,
        bootstrap::{self, BootstrapConfig},
        data::{ColumnMapping, Dataset, Target},
        task::{self, Overrides},
    },
    model::{DataType, Dim, Signature, Tensor, TensorData, TensorSpec},
};
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs tests/eval/sklearn_reference.py and parses what it prints.
fn reference(args: &[&str]) -> Value {
    let script = repo().join("tests/eval/sklearn_reference.py");
    let mut all = vec![script.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    serde_json::from_slice(&common::run_fixture_python(&all)).expect("the reference prints JSON")
}

fn sklearn_metrics(case: &Value) -> BTreeMap<String, f64> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.json");
    std::fs::write(&path, case.to_string()).unwrap();
    let result = reference(&["metrics", path.to_str().unwrap()]);
    serde_json::from_value(result).unwrap()
}

fn assert_same(ours: &BTreeMap<String, f64>, sklearn: &BTreeMap<String, f64>, what: &str) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        sklearn.keys().collect::<Vec<_>>(),
        "{what}: metric names"
    );
    for (name, expected) in sklearn {
        let got = ours[name];
        assert!(
            (got - expected).abs() <= 1e-6,
            "{what}: {name} is {got}, sklearn says {expected}"
        );
    }
}

fn label_json(label: &Label) -> Value {
    match label {
        Label::Int(value) => json!(value),
        Label::Text(text) => json!(text),
    }
}

/// The plan `task::infer` makes for a model that answers `outputs`.
fn plan(kind: Task, outputs: Vec<TensorSpec>) -> TaskPlan {
    let signature = Signature {
        inputs: Vec::new(),
        outputs,
    };
    let overrides = Overrides {
        task: Some(kind),
        ..Overrides::default()
    };
    task::infer(&signature, &overrides).unwrap()
}

fn dynamic(shape: &[usize]) -> Vec<Dim> {
    let mut dims = vec![Dim::Dynamic(None)];
    dims.extend(shape[1..].iter().map(|&size| Dim::Fixed(size)));
    dims
}

/// A classification case: true and predicted labels, and scores with their shape.
struct Classified {
    truth: Target,
    predicted: TensorData,
    scores: Option<(Vec<usize>, TensorData)>,
}

fn evaluate_classes(case: Classified, what: &str) -> Evaluation {
    let mut outputs = vec![TensorSpec::new(
        "label",
        case.predicted.datatype(),
        dynamic(&[0]),
    )];
    if let Some((shape, data)) = &case.scores {
        outputs.push(TensorSpec::new("scores", data.datatype(), dynamic(shape)));
    }
    let plan = plan(Task::Classification, outputs);
    let rows = case.predicted.len();
    let mut outputs = vec![Tensor::new(vec![rows], case.predicted.clone()).unwrap()];
    if let Some((shape, data)) = &case.scores {
        outputs.push(Tensor::new(shape.clone(), data.clone()).unwrap());
    }
    let mut predictions = Predictions::new(&plan);
    predictions.push(&outputs).unwrap();
    let mut truth = Truth::new(Task::Classification);
    truth.push(case.truth.clone()).unwrap();
    let evaluation = Evaluation::new(&plan, &predictions, &truth).unwrap();
    let reference = json!({
        "task": "classification",
        "y_true": target_json(&case.truth),
        "y_pred": tensor_json(&case.predicted),
        "scores": case.scores.as_ref().map(|(shape, data)| scores_json(shape, data)),
        "score_dtype": case.scores.as_ref().map(|(_, d)| if d.datatype() == DataType::Fp32 { "float32" } else { "float64" }),
        "classes": evaluation.classes().iter().map(label_json).collect::<Vec<_>>(),
        "positive": evaluation.positive_class().map(label_json),
    });
    assert_same(&evaluation.metrics(), &sklearn_metrics(&reference), what);
    evaluation
}

fn target_json(target: &Target) -> Value {
    match target {
        Target::Numeric(values) => json!(values.iter().map(|&v| v as i64).collect::<Vec<_>>()),
        Target::Labels(labels) => json!(
            labels
                .iter()
                .map(|l| label_json(&Label::parse(l)))
                .collect::<Vec<_>>()
        ),
    }
}

fn tensor_json(data: &TensorData) -> Value {
    match data {
        TensorData::Int64(v) => json!(v),
        TensorData::Bytes(v) => json!(v),
        TensorData::Fp32(v) => json!(v),
        TensorData::Fp64(v) => json!(v),
        other => panic!("no JSON for {:?}", other.datatype()),
    }
}

fn scores_json(shape: &[usize], data: &TensorData) -> Value {
    let values: Vec<f64> = match data {
        TensorData::Fp32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp64(v) => v.clone(),
        other => panic!("scores of {:?}", other.datatype()),
    };
    match shape {
        [_] => json!(values),
        [_, columns] => json!(values.chunks(*columns).collect::<Vec<_>>()),
        _ => panic!("shape {shape:?}"),
    }
}

fn two_columns(positive: &[f32]) -> (Vec<usize>, TensorData) {
    let data = positive.iter().flat_map(|&p| [1.0 - p, p]).collect();
    (vec![positive.len(), 2], TensorData::Fp32(data))
}

#[test]
fn binary_with_tied_scores_and_certain_probabilities() {
    let positive = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9, 0.0, 1.0, 0.65, 0.4, 1.0];
    let truth = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let predicted = positive.iter().map(|&p| i64::from(p > 0.5)).collect();
    evaluate_classes(
        Classified {
            truth: Target::Numeric(truth.into()),
            predicted: TensorData::Int64(predicted),
            scores: Some(two_columns(&positive)),
        },
        "binary with ties",
    );
}

#[test]
fn binary_that_never_predicts_the_positive_class() {
    let positive = [0.1, 0.2, 0.3, 0.45, 0.2, 0.05];
    evaluate_classes(
        Classified {
            truth: Target::Numeric(vec![0.0, 1.0, 0.0, 1.0, 1.0, 0.0]),
            predicted: TensorData::Int64(vec![0; 6]),
            scores: Some(two_columns(&positive)),
        },
        "positive class never predicted",
    );
}

#[test]
fn binary_with_one_positive_score_column() {
    let positive = vec![0.2f32, 0.7, 0.7, 0.1, 0.95, 0.5];
    evaluate_classes(
        Classified {
            truth: Target::Numeric(vec![0.0, 1.0, 0.0, 0.0, 1.0, 1.0]),
            predicted: TensorData::Int64(vec![0, 1, 1, 0, 1, 0]),
            scores: Some((vec![6], TensorData::Fp32(positive))),
        },
        "one score column",
    );
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn multiclass_strings_with_a_class_never_predicted() {
    let truth = ["cat", "dog", "emu", "cat", "dog", "emu", "emu", "cat"];
    let predicted = ["cat", "dog", "dog", "cat", "cat", "dog", "dog", "cat"];
    let scores = [
        [0.7, 0.2, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.5, 0.4],
        [0.6, 0.3, 0.1],
        [0.4, 0.4, 0.2],
        [0.2, 0.5, 0.3],
        [0.0, 0.6, 0.4],
        [1.0, 0.0, 0.0],
    ];
    evaluate_classes(
        Classified {
            truth: Target::Labels(strings(&truth)),
            predicted: TensorData::Bytes(strings(&predicted)),
            scores: Some((vec![8, 3], TensorData::Fp64(scores.concat()))),
        },
        "multiclass",
    );
}

#[test]
fn labels_only_classifier() {
    evaluate_classes(
        Classified {
            truth: Target::Labels(strings(&["1", "2", "3", "2"])),
            predicted: TensorData::Int64(vec![1, 2, 2, 2]),
            scores: None,
        },
        "labels only",
    );
}

fn evaluate_regression(truth: Vec<f64>, predicted: Vec<f32>, what: &str) -> Evaluation {
    let value = TensorSpec::new("value", DataType::Fp32, dynamic(&[0, 1]));
    let plan = plan(Task::Regression, vec![value]);
    let mut predictions = Predictions::new(&plan);
    let rows = predicted.len();
    let tensor = Tensor::new(vec![rows, 1], TensorData::Fp32(predicted.clone())).unwrap();
    predictions.push(&[tensor]).unwrap();
    let mut target = Truth::new(Task::Regression);
    target.push(Target::Numeric(truth.clone())).unwrap();
    let evaluation = Evaluation::new(&plan, &predictions, &target).unwrap();
    let reference = json!({"task": "regression", "y_true": truth, "y_pred": predicted});
    assert_same(&evaluation.metrics(), &sklearn_metrics(&reference), what);
    evaluation
}

#[test]
fn regression_and_constant_targets() {
    evaluate_regression(
        vec![3.0, -0.5, 2.0, 7.0, 4.25],
        vec![2.5, 0.0, 2.0, 8.0, 4.0],
        "regression",
    );
    evaluate_regression(vec![3.0; 4], vec![3.0; 4], "constant, predicted exactly");
    evaluate_regression(vec![3.0; 4], vec![3.0, 3.5, 3.0, 2.0], "constant, missed");
}

fn classifier_signature(inputs: Vec<TensorSpec>) -> Signature {
    Signature {
        inputs,
        outputs: vec![
            TensorSpec::new("label", DataType::Int64, vec![Dim::Dynamic(None)]),
            TensorSpec::new(
                "probabilities",
                DataType::Fp32,
                vec![Dim::Dynamic(None), Dim::Fixed(2)],
            ),
        ],
    }
}

fn column(name: &str, datatype: DataType) -> TensorSpec {
    TensorSpec::new(name, datatype, vec![Dim::Dynamic(None), Dim::Fixed(1)])
}

/// The fixture's model run by ONNX Runtime (Python) on `data`, then evaluated by pinserve
/// from the file it reads itself, and by sklearn.
fn fixture_matches_sklearn(model: &str, data: &Path, signature: &Signature, batch_rows: usize) {
    let model_path = repo()
        .join("models-fixtures")
        .join(model)
        .join("1/model.onnx");
    let run = reference(&[
        "predict",
        model_path.to_str().unwrap(),
        data.to_str().unwrap(),
        "target",
    ]);
    let plan = task::infer(signature, &Overrides::default()).unwrap();
    let mapping = ColumnMapping {
        target: Some("target".to_owned()),
        ..ColumnMapping::default()
    };
    let dataset = Dataset::open(data, signature, &mapping).unwrap();
    let (mut truth, mut fed) = (Truth::new(plan.task), BTreeMap::<String, Vec<Value>>::new());
    for batch in dataset.batches(batch_rows).unwrap() {
        let batch = batch.unwrap();
        for (spec, tensor) in signature.inputs.iter().zip(&batch.inputs) {
            let values = fed.entry(spec.name.clone()).or_default();
            values.extend(
                tensor_json(tensor.data())
                    .as_array()
                    .unwrap()
                    .iter()
                    .cloned(),
            );
        }
        truth.push(batch.target.expect("a target column")).unwrap();
    }
    for (name, values) in &fed {
        assert_eq!(
            as_f32(values),
            as_f32(run["inputs"][name].as_array().unwrap()),
            "{model}: '{name}'"
        );
    }
    let mut predictions = Predictions::new(&plan);
    let outputs: Vec<Tensor> = plan
        .outputs
        .iter()
        .map(|&index| output_tensor(&run["outputs"][&signature.outputs[index].name]))
        .collect();
    predictions.push(&outputs).unwrap();
    let evaluation = Evaluation::new(&plan, &predictions, &truth).unwrap();
    let case = json!({
        "task": "classification",
        "y_true": run["target"].as_array().unwrap().iter().map(|t| label_json(&Label::parse(t.as_str().unwrap()))).collect::<Vec<_>>(),
        "y_pred": run["outputs"]["label"]["data"],
        "scores": scores_json(outputs[1].shape(), outputs[1].data()),
        "score_dtype": "float32",
        "classes": evaluation.classes().iter().map(label_json).collect::<Vec<_>>(),
        "positive": evaluation.positive_class().map(label_json),
    });
    assert_eq!(dataset.rows, evaluation.rows() as u64);
    assert_same(&evaluation.metrics(), &sklearn_metrics(&case), model);
}

/// Numbers compared as the float32 the model sees (serde_json's parser may be off by an ulp
/// of f64), strings as they are.
fn as_f32(values: &[Value]) -> Vec<Result<f32, &str>> {
    values
        .iter()
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| v.as_str().unwrap())
        })
        .collect()
}

fn output_tensor(output: &Value) -> Tensor {
    let shape: Vec<usize> = serde_json::from_value(output["shape"].clone()).unwrap();
    let data = &output["data"];
    let data = if data[0].is_i64() {
        TensorData::Int64(serde_json::from_value(data.clone()).unwrap())
    } else {
        TensorData::Fp32(serde_json::from_value(data.clone()).unwrap())
    };
    Tensor::new(shape, data).unwrap()
}

#[test]
fn breast_cancer_fixture_matches_sklearn() {
    let input = TensorSpec::new(
        "input",
        DataType::Fp32,
        vec![Dim::Dynamic(None), Dim::Fixed(30)],
    );
    let data = repo().join("models-fixtures/breast_cancer/test.csv");
    fixture_matches_sklearn(
        "breast_cancer",
        &data,
        &classifier_signature(vec![input]),
        50,
    );
}

#[test]
fn churn_pipeline_with_string_inputs_matches_sklearn() {
    let inputs = vec![
        column("plan", DataType::Bytes),
        column("region", DataType::Bytes),
        column("tenure_months", DataType::Fp32),
        column("monthly_charges", DataType::Fp32),
    ];
    let data = repo().join("models-fixtures/eval-data/churn.csv");
    fixture_matches_sklearn("churn_pipeline", &data, &classifier_signature(inputs), 64);
}

#[test]
fn bootstrap_is_seeded_contains_the_estimate_and_pairs_exactly() {
    let positive: Vec<f32> = (0..400).map(|i| ((i * 37) % 100) as f32 / 100.0).collect();
    let truth: Vec<f64> = (0..400)
        .map(|i| f64::from(((i * 37) % 100 + i % 7 * 9) > 55))
        .collect();
    let evaluation = evaluate_classes(
        Classified {
            truth: Target::Numeric(truth),
            predicted: TensorData::Int64(positive.iter().map(|&p| i64::from(p > 0.5)).collect()),
            scores: Some(two_columns(&positive)),
        },
        "bootstrap data",
    );
    let config = BootstrapConfig {
        resamples: 200,
        ..BootstrapConfig::default()
    };
    let first = bootstrap::intervals(&evaluation, &config).unwrap();
    assert_eq!(first, bootstrap::intervals(&evaluation, &config).unwrap());
    assert_eq!(first.len(), 6);
    for (name, interval) in &first {
        assert!(
            interval.low <= interval.estimate && interval.estimate <= interval.high,
            "{name}: {interval:?}"
        );
        assert!(interval.low < interval.high, "{name}: {interval:?}");
    }
    let other_seed = BootstrapConfig {
        seed: 1,
        ..config.clone()
    };
    assert_ne!(
        first,
        bootstrap::intervals(&evaluation, &other_seed).unwrap()
    );
    let itself = bootstrap::paired_difference(&evaluation, &evaluation, &config).unwrap();
    for (name, interval) in itself {
        assert_eq!(
            (interval.estimate, interval.low, interval.high),
            (0.0, 0.0, 0.0),
            "{name}"
        );
    }
}
