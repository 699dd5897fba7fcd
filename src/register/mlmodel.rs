//! The `MLmodel` file of a registered model, with the `onnx` and `python_function` flavors as
//! `mlflow.onnx.log_model` writes them and a tensor signature derived from the ONNX graph, so
//! that `mlflow.pyfunc.load_model` (and pinserve's own signature check) reads it.

use serde::Serialize;
use serde_json::json;

use crate::model::{DataType, Dim, Signature, TensorSpec};

/// What MLflow's onnx flavor runs the model with when loaded in Python.
const PROVIDERS: [&str; 2] = ["CUDAExecutionProvider", "CPUExecutionProvider"];

#[derive(Serialize)]
struct MlModel<'a> {
    artifact_path: &'a str,
    flavors: Flavors<'a>,
    metadata: Metadata,
    model_id: &'a str,
    model_size_bytes: u64,
    model_uuid: &'a str,
    run_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureText>,
    utc_time_created: String,
}

#[derive(Serialize)]
struct Flavors<'a> {
    onnx: OnnxFlavor<'a>,
    python_function: PythonFunction<'a>,
}

#[derive(Serialize)]
struct OnnxFlavor<'a> {
    code: Option<()>,
    data: &'a str,
    onnx_session_options: Option<()>,
    providers: [&'static str; 2],
}

#[derive(Serialize)]
struct PythonFunction<'a> {
    data: &'a str,
    loader_module: &'static str,
}

#[derive(Serialize)]
struct Metadata {
    registered_by: String,
}

/// MLflow keeps each half of a signature as a JSON string inside the YAML.
#[derive(Serialize)]
struct SignatureText {
    inputs: String,
    outputs: String,
    params: Option<()>,
}

/// Where a logged model lives and what it holds.
pub(crate) struct LoggedModelFacts<'a> {
    pub(crate) artifact_uri: &'a str,
    pub(crate) model_id: &'a str,
    pub(crate) run_id: &'a str,
    /// The model file's name in the artifact directory.
    pub(crate) data: &'a str,
    /// Bytes of every file registered with it.
    pub(crate) size: u64,
}

/// The `MLmodel` text for `facts`; `signature` is `None` when the graph has a type MLflow's
/// tensor specs cannot name (bfloat16).
pub(crate) fn render(facts: &LoggedModelFacts<'_>, signature: &Signature) -> String {
    let document = MlModel {
        artifact_path: facts.artifact_uri,
        flavors: Flavors {
            onnx: OnnxFlavor {
                code: None,
                data: facts.data,
                onnx_session_options: None,
                providers: PROVIDERS,
            },
            python_function: PythonFunction {
                data: facts.data,
                loader_module: "mlflow.onnx",
            },
        },
        metadata: Metadata {
            registered_by: format!("pinserve {}", env!("CARGO_PKG_VERSION")),
        },
        model_id: facts.model_id,
        model_size_bytes: facts.size,
        model_uuid: facts.model_id,
        run_id: facts.run_id,
        signature: signature_text(signature),
        utc_time_created: utc_now(),
    };
    serde_saphyr::to_string(&document).expect("serialising to memory does not fail")
}

fn signature_text(signature: &Signature) -> Option<SignatureText> {
    let half = |specs: &[TensorSpec]| -> Option<String> {
        let specs: Option<Vec<_>> = specs.iter().map(tensor_spec).collect();
        Some(serde_json::Value::Array(specs?).to_string())
    };
    Some(SignatureText {
        inputs: half(&signature.inputs)?,
        outputs: half(&signature.outputs)?,
        params: None,
    })
}

/// One tensor as MLflow's `TensorSpec.to_dict` writes it: named, NumPy dtype, -1 for dynamic.
fn tensor_spec(spec: &TensorSpec) -> Option<serde_json::Value> {
    let shape: Vec<i64> = spec
        .dims
        .iter()
        .map(|dim| match dim {
            Dim::Fixed(size) => *size as i64,
            Dim::Dynamic(_) => -1,
        })
        .collect();
    Some(json!({
        "name": spec.name,
        "type": "tensor",
        "tensor-spec": {"dtype": numpy_dtype(spec.datatype)?, "shape": shape},
    }))
}

/// NumPy's name for each element type, as MLflow writes it; bfloat16 has none.
fn numpy_dtype(datatype: DataType) -> Option<&'static str> {
    Some(match datatype {
        DataType::Bool => "bool",
        DataType::Uint8 => "uint8",
        DataType::Uint16 => "uint16",
        DataType::Uint32 => "uint32",
        DataType::Uint64 => "uint64",
        DataType::Int8 => "int8",
        DataType::Int16 => "int16",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::Fp16 => "float16",
        DataType::Fp32 => "float32",
        DataType::Fp64 => "float64",
        DataType::Bytes => "str",
        DataType::Bf16 => return None,
    })
}

/// The current UTC time as MLflow writes it (`2026-12-02 14:33:53.286749`).
#[allow(
    clippy::disallowed_methods,
    reason = "MLmodel records the date it was written"
)]
fn utc_now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now())
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::signature::examples::{column, matrix},
        registry::mlflow::MlModel as ParsedMlModel,
    };

    fn signature() -> Signature {
        Signature {
            inputs: vec![
                matrix("plan", DataType::Bytes, 1),
                matrix("x", DataType::Fp32, 3),
            ],
            outputs: vec![column("label", DataType::Int64)],
        }
    }

    #[test]
    fn what_is_written_reads_back_as_the_graphs_signature() {
        let facts = LoggedModelFacts {
            artifact_uri: "mlflow-artifacts:/1/models/m-1/artifacts",
            model_id: "m-1",
            run_id: "r1",
            data: "model.onnx",
            size: 42,
        };
        let text = render(&facts, &signature());
        let parsed = ParsedMlModel::parse(&text).unwrap();
        assert_eq!(parsed.onnx_data(), Some("model.onnx"));
        let mlflow_signature = parsed.signature().unwrap().expect("a signature");
        mlflow_signature.check(&signature()).unwrap();
        assert!(text.contains("loader_module: mlflow.onnx"), "{text}");
    }

    #[test]
    fn bfloat16_graphs_get_no_signature() {
        let mut signature = signature();
        signature.outputs[0].datatype = DataType::Bf16;
        assert!(signature_text(&signature).is_none());
    }

    #[test]
    fn the_creation_time_is_written_as_mlflow_writes_it() {
        let time = utc_now();
        assert_eq!(time.len(), "2026-12-02 14:33:53.286749".len(), "{time}");
        assert_eq!(&time[10..11], " ");
    }
}
