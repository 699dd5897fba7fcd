//! An MLflow model signature (`{"inputs": [...], "outputs": [...]}`), typed, and its check
//! against the ONNX graph: a disagreement means the registry describes some other model.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{DataType, Signature, TensorSpec};

/// Both halves of a signature; MLflow writes `null` for a half it has nothing for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MlflowSignature {
    #[serde(default)]
    pub(crate) inputs: Option<Vec<ColumnSpec>>,
    #[serde(default)]
    pub(crate) outputs: Option<Vec<ColumnSpec>>,
}

/// One input or output: a tensor (`type: tensor` with a `tensor-spec`) or a column (`type:
/// double`, `string`, ... or `any`). Fields pinserve does not read are kept in `rest`, so the
/// signature reads back as MLflow wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ColumnSpec {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(
        rename = "tensor-spec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) tensor_spec: Option<MlflowTensorSpec>,
    #[serde(flatten)]
    pub(crate) rest: Map<String, Value>,
}

/// A NumPy dtype name and a shape in which -1 is any size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MlflowTensorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shape: Option<Vec<i64>>,
    #[serde(flatten)]
    pub(crate) rest: Map<String, Value>,
}

/// How a signature disagrees with the graph, or why it cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the MLflow signature disagrees with the ONNX graph: its {role}s are {declared:?}, the graph's are {actual:?}"
    )]
    Names {
        role: &'static str,
        declared: Vec<String>,
        actual: Vec<String>,
    },
    #[error(
        "the MLflow signature disagrees with the ONNX graph: it has {declared} {role}s, the graph has {actual}"
    )]
    Count {
        role: &'static str,
        declared: usize,
        actual: usize,
    },
    #[error(
        "the MLflow signature disagrees with the ONNX graph: {role} '{tensor}': dtype {dtype} against {datatype}"
    )]
    Dtype {
        role: &'static str,
        tensor: String,
        dtype: String,
        datatype: DataType,
    },
    #[error(
        "the MLflow signature disagrees with the ONNX graph: {role} '{tensor}': shape {declared:?} against {actual:?}"
    )]
    Shape {
        role: &'static str,
        tensor: String,
        declared: Vec<i64>,
        actual: Vec<i64>,
    },
    #[error("the MLflow signature is unreadable: {0}")]
    Unreadable(#[source] serde_json::Error),
}

/// Checks a signature as the manifest keeps it (JSON) against the graph.
pub(crate) fn check_signature(mlflow: &Value, graph: &Signature) -> Result<(), SignatureError> {
    MlflowSignature::deserialize(mlflow)
        .map_err(SignatureError::Unreadable)?
        .check(graph)
}

impl MlflowSignature {
    /// The same tensor names as the graph and, for tensor-based signatures, the same element
    /// types and compatible shapes.
    pub(crate) fn check(&self, graph: &Signature) -> Result<(), SignatureError> {
        check_half(self.inputs.as_deref(), &graph.inputs, "input")?;
        check_half(self.outputs.as_deref(), &graph.outputs, "output")
    }

    /// The signature as the manifest and the model's metadata carry it. It was read from JSON,
    /// so it always writes as JSON again (string keys, finite numbers).
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn check_half(
    specs: Option<&[ColumnSpec]>,
    graph: &[TensorSpec],
    role: &'static str,
) -> Result<(), SignatureError> {
    let Some(specs) = specs else {
        return Ok(());
    };
    // What MLflow writes when it cannot infer a schema, as for a ZipMap's list of dicts.
    if specs
        .iter()
        .all(|spec| spec.kind.as_deref() == Some("any") && spec.name.is_none())
    {
        return Ok(());
    }
    let all_named = specs.iter().all(|spec| spec.name.is_some());
    check_names(specs, graph, role, all_named)?;
    for (position, spec) in specs.iter().enumerate() {
        let tensor = match &spec.name {
            Some(name) if all_named => graph.iter().find(|t| &t.name == name),
            _ => graph.get(position),
        };
        let (Some(tensor), Some(tensor_spec)) = (tensor, &spec.tensor_spec) else {
            continue;
        };
        // The graph's ZipMap is served as a matrix; MLflow describes the maps, if anything.
        if tensor.class_labels.is_none() {
            check_tensor(tensor_spec, tensor, role)?;
        }
    }
    Ok(())
}

/// Named specs name the graph's tensors, in any order; unnamed ones are as many as they are.
fn check_names(
    specs: &[ColumnSpec],
    graph: &[TensorSpec],
    role: &'static str,
    all_named: bool,
) -> Result<(), SignatureError> {
    if !all_named {
        return match specs.len() == graph.len() {
            true => Ok(()),
            false => Err(SignatureError::Count {
                role,
                declared: specs.len(),
                actual: graph.len(),
            }),
        };
    }
    let mut declared: Vec<String> = specs.iter().filter_map(|spec| spec.name.clone()).collect();
    let mut actual: Vec<String> = graph.iter().map(|spec| spec.name.clone()).collect();
    declared.sort_unstable();
    actual.sort_unstable();
    if declared == actual {
        Ok(())
    } else {
        Err(SignatureError::Names {
            role,
            declared,
            actual,
        })
    }
}

fn check_tensor(
    spec: &MlflowTensorSpec,
    tensor: &TensorSpec,
    role: &'static str,
) -> Result<(), SignatureError> {
    if let Some(dtype) = &spec.dtype
        && let Some(datatype) = numpy_datatype(dtype)
        && datatype != tensor.datatype
    {
        return Err(SignatureError::Dtype {
            role,
            tensor: tensor.name.clone(),
            dtype: dtype.clone(),
            datatype: tensor.datatype,
        });
    }
    let Some(declared) = &spec.shape else {
        return Ok(());
    };
    let actual = tensor.protocol_shape();
    let compatible = declared.len() == actual.len()
        && declared
            .iter()
            .zip(&actual)
            .all(|(&a, &b)| a < 0 || b < 0 || a == b);
    if compatible {
        Ok(())
    } else {
        Err(SignatureError::Shape {
            role,
            tensor: tensor.name.clone(),
            declared: declared.clone(),
            actual,
        })
    }
}

/// NumPy dtype names as MLflow writes them in tensor specs.
fn numpy_datatype(dtype: &str) -> Option<DataType> {
    Some(match dtype {
        "bool" => DataType::Bool,
        "uint8" => DataType::Uint8,
        "uint16" => DataType::Uint16,
        "uint32" => DataType::Uint32,
        "uint64" => DataType::Uint64,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float16" => DataType::Fp16,
        "float32" => DataType::Fp32,
        "float64" => DataType::Fp64,
        "str" | "object" | "bytes" => DataType::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClassLabels, DataType, Dim, signature::examples::two_inputs};

    #[test]
    fn signatures_that_match_the_graph_pass() {
        let signature = serde_json::json!({
            "inputs": [
                {"type": "tensor", "name": "tenure", "tensor-spec": {"dtype": "float32", "shape": [-1, 1]}},
                {"type": "tensor", "name": "plan", "tensor-spec": {"dtype": "str", "shape": [-1, 1]}},
            ],
            "outputs": [
                {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
                {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}},
            ],
        });
        check_signature(&signature, &two_inputs()).unwrap();
        let columns = serde_json::json!({"inputs": [{"type": "string", "name": "plan"}, {"type": "double", "name": "tenure"}], "outputs": null});
        check_signature(&columns, &two_inputs()).unwrap();
    }

    #[test]
    fn signatures_of_another_model_are_refused() {
        let wrong_names =
            serde_json::json!({"inputs": [{"type": "double", "name": "age"}], "outputs": null});
        let err = check_signature(&wrong_names, &two_inputs())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[\"age\"]"), "{err}");
        let wrong_dtype = serde_json::json!({"inputs": [
            {"type": "tensor", "name": "tenure", "tensor-spec": {"dtype": "float64", "shape": [-1, 1]}},
            {"type": "tensor", "name": "plan", "tensor-spec": {"dtype": "str", "shape": [-1, 1]}},
        ]});
        assert!(
            check_signature(&wrong_dtype, &two_inputs())
                .unwrap_err()
                .to_string()
                .contains("dtype float64 against FP32")
        );
        let wrong_shape = serde_json::json!({"outputs": [
            {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
            {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}},
        ]});
        assert!(
            check_signature(&wrong_shape, &two_inputs())
                .unwrap_err()
                .to_string()
                .contains("shape [-1, 3] against [-1, 2]")
        );
    }

    #[test]
    fn a_zipmap_classifier_passes_with_what_mlflow_infers_for_it() {
        let zipmap = Signature {
            inputs: two_inputs().inputs,
            outputs: vec![
                TensorSpec::new("output_label", DataType::Int64, vec![Dim::Dynamic(None)]),
                TensorSpec::zipmap("output_probability", ClassLabels::Int64(vec![0, 1])),
            ],
        };
        let uninferred = serde_json::json!({"outputs": [{"type": "any", "required": true}]});
        check_signature(&uninferred, &zipmap).unwrap();
        let maps = serde_json::json!({"outputs": [
            {"type": "tensor", "name": "output_label", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
            {"type": "tensor", "name": "output_probability", "tensor-spec": {"dtype": "object", "shape": [-1]}},
        ]});
        check_signature(&maps, &zipmap).unwrap();
        let too_few = serde_json::json!({"outputs": [{"type": "long"}]});
        assert!(check_signature(&too_few, &zipmap).is_err());
    }
}
