//! The Open Inference Protocol v2 (KServe V2, Triton's HTTP/REST API), JSON form: inference
//! requests and responses, and the server and model metadata documents.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{RequestError, json};
use crate::model::{DataType, InputError, Signature, Tensor, TensorSpec, tensor::element_count};

/// The platform name Triton and KServe report for ONNX Runtime models.
pub const PLATFORM: &str = "onnxruntime_onnx";

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<WireInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<WireRequestedOutput>>,
}

#[derive(Deserialize)]
struct WireInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// Kept as raw text until the datatype is known, then decoded straight into its buffer.
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct WireRequestedOutput {
    name: String,
}

/// An inference request checked against the model's signature.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    /// Inputs bound in signature order.
    pub inputs: Vec<Tensor>,
    /// Signature indices of the outputs to return, in the order they were requested.
    pub outputs: Vec<usize>,
}

pub fn decode_request(body: &[u8], signature: &Signature) -> Result<InferRequest, RequestError> {
    let wire: WireRequest = serde_json::from_slice(body).map_err(RequestError::malformed)?;
    let named = wire
        .inputs
        .into_iter()
        .map(|input| decode_input(input, signature))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = signature.bind_inputs(named)?;
    let requested = wire
        .outputs
        .as_ref()
        .map(|outputs| outputs.iter().map(|output| output.name.as_str()));
    let outputs = signature.select_outputs(requested)?;
    Ok(InferRequest {
        id: wire.id,
        inputs,
        outputs,
    })
}

fn decode_input(
    input: WireInput<'_>,
    signature: &Signature,
) -> Result<(String, Tensor), InputError> {
    let spec = signature.input(&input.name)?;
    let name = input.name.as_str();
    let datatype = DataType::from_protocol_name(&input.datatype).ok_or_else(|| {
        InputError::bad_data(
            name,
            format!(
                "unknown datatype '{}'; the model expects {}",
                input.datatype, spec.datatype
            ),
        )
    })?;
    spec.check_datatype(datatype)?;
    let shape = input
        .shape
        .iter()
        .map(|&dim| usize::try_from(dim))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| {
            InputError::bad_data(
                name,
                format!("shape {:?} has a negative dimension", input.shape),
            )
        })?;
    spec.check_shape(&shape)?;
    let expected_len = element_count(&shape)
        .ok_or_else(|| InputError::bad_data(name, format!("shape {shape:?} is too large")))?;
    let data = json::decode_raw(datatype, input.data.get(), expected_len)
        .map_err(|err| InputError::bad_data(name, format!("data: {err}")))?;
    let tensor = Tensor::new(shape, data).map_err(|err| InputError::bad_data(name, err))?;
    Ok((input.name, tensor))
}

#[derive(Serialize)]
struct WireResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<WireOutput<'a>>,
}

#[derive(Serialize)]
struct WireOutput<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    data: json::FlatJson<'a>,
}

/// Writes the response for `outputs`, which hold the tensors for `output_indices` in order.
pub fn encode_response(
    model: (&str, &str),
    id: Option<&str>,
    signature: &Signature,
    output_indices: &[usize],
    outputs: &[Tensor],
) -> Vec<u8> {
    let response = WireResponse {
        model_name: model.0,
        model_version: model.1,
        id,
        outputs: output_indices
            .iter()
            .zip(outputs)
            .map(|(&index, tensor)| WireOutput {
                name: &signature.outputs[index].name,
                datatype: tensor.datatype().as_str(),
                shape: tensor.shape(),
                data: json::FlatJson(tensor.data()),
            })
            .collect(),
    };
    serde_json::to_vec(&response).expect("serialising to memory does not fail")
}

/// `GET /v2`.
#[derive(Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<&'static str>,
}

impl ServerMetadata {
    pub fn current() -> ServerMetadata {
        ServerMetadata {
            name: "pinserve",
            version: env!("CARGO_PKG_VERSION"),
            extensions: Vec::new(),
        }
    }
}

/// `GET /v2/models/{name}[/versions/{version}]`.
#[derive(Serialize)]
pub struct ModelMetadata<'a> {
    pub name: &'a str,
    pub versions: Vec<&'a str>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata<'a>>,
    pub outputs: Vec<TensorMetadata<'a>>,
    /// Extra facts about the model, such as its MLflow signature.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
pub struct TensorMetadata<'a> {
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

impl<'a> From<&'a TensorSpec> for TensorMetadata<'a> {
    fn from(spec: &'a TensorSpec) -> Self {
        TensorMetadata {
            name: &spec.name,
            datatype: spec.datatype.as_str(),
            shape: spec.protocol_shape(),
        }
    }
}

impl<'a> ModelMetadata<'a> {
    pub fn new(name: &'a str, version: &'a str, signature: &'a Signature) -> Self {
        ModelMetadata {
            name,
            versions: vec![version],
            platform: PLATFORM,
            inputs: signature.inputs.iter().map(TensorMetadata::from).collect(),
            outputs: signature.outputs.iter().map(TensorMetadata::from).collect(),
            parameters: serde_json::Map::new(),
        }
    }

    /// Adds the signature from the model's MLmodel file as `parameters.mlflow_signature`.
    pub fn with_mlflow_signature(mut self, signature: Option<&serde_json::Value>) -> Self {
        if let Some(signature) = signature {
            self.parameters
                .insert("mlflow_signature".to_owned(), signature.clone());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dim, TensorData, signature::examples::batch};

    fn signature() -> Signature {
        Signature {
            inputs: vec![TensorSpec::new(
                "features",
                DataType::Fp32,
                vec![batch(), Dim::Fixed(2)],
            )],
            outputs: vec![
                TensorSpec::new("label", DataType::Int64, vec![batch()]),
                TensorSpec::new("score", DataType::Fp32, vec![batch(), Dim::Fixed(1)]),
            ],
        }
    }

    fn decode(body: &str) -> Result<InferRequest, String> {
        decode_request(body.as_bytes(), &signature()).map_err(|e| e.to_string())
    }

    #[test]
    fn decodes_a_request_with_requested_outputs() {
        let request = decode(
            r#"{"id": "r1", "inputs": [{"name": "features", "shape": [2, 2], "datatype": "FP32",
                "data": [[1, 2], [3, 4]], "parameters": {"x": 1}}],
                "outputs": [{"name": "score"}], "parameters": {}}"#,
        )
        .unwrap();
        assert_eq!(request.id.as_deref(), Some("r1"));
        assert_eq!(request.inputs[0].shape(), &[2, 2]);
        assert_eq!(
            request.inputs[0].data(),
            &TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(request.outputs, vec![1]);
    }

    #[test]
    fn every_problem_names_the_input() {
        let input = |shape: &str, datatype: &str, data: &str| {
            decode(&format!(
                r#"{{"inputs": [{{"name": "features", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}"#
            ))
            .unwrap_err()
        };
        assert!(
            input("[1, 2]", "FP64", "[1, 2]")
                .contains("datatype FP64 does not match the model's FP32")
        );
        assert!(input("[1, 2]", "FLOAT", "[1, 2]").contains("unknown datatype 'FLOAT'"));
        assert!(input("[1, 3]", "FP32", "[1, 2, 3]").contains("dimension 1 must be 2"));
        assert!(input("[-1, 2]", "FP32", "[1, 2]").contains("negative dimension"));
        assert!(input("[2, 2]", "FP32", "[1, 2, 3]").contains("holds 4 values, but 3 were given"));
        assert!(
            input("[1, 2]", "FP32", r#"[1, "x"]"#).contains("input 'features': data: invalid type")
        );
        // A huge declared shape is checked against the data, never allocated.
        assert!(
            input("[9223372036854775807, 2]", "FP32", "[1, 2]")
                .contains("holds 18446744073709551614 values, but 2 were given")
        );
    }

    #[test]
    fn malformed_bodies_are_reported_as_such() {
        assert!(
            decode("{")
                .unwrap_err()
                .starts_with("malformed request body")
        );
        assert!(
            decode(r#"{"inputs": 3}"#)
                .unwrap_err()
                .starts_with("malformed request body")
        );
        assert!(
            decode(r#"{"inputs": [{"name": "features"}]}"#)
                .unwrap_err()
                .contains("missing field")
        );
        assert!(
            decode(r#"{"inputs": []}"#)
                .unwrap_err()
                .contains("missing input 'features'")
        );
    }

    #[test]
    fn encodes_outputs_with_their_names_and_shapes() {
        let sig = signature();
        let outputs = vec![Tensor::new(vec![2, 1], TensorData::Fp32(vec![0.25, 0.5])).unwrap()];
        let body = encode_response(("m", "3"), Some("r1"), &sig, &[1], &outputs);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"model_name": "m", "model_version": "3", "id": "r1",
                "outputs": [{"name": "score", "datatype": "FP32", "shape": [2, 1], "data": [0.25, 0.5]}]})
        );
    }

    #[test]
    fn metadata_reports_dynamic_dims_as_minus_one() {
        let sig = signature();
        let metadata = serde_json::to_value(ModelMetadata::new("m", "3", &sig)).unwrap();
        assert_eq!(metadata["platform"], "onnxruntime_onnx");
        assert_eq!(metadata["versions"], serde_json::json!(["3"]));
        assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, 2]));
    }
}
