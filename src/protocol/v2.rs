//! The Open Inference Protocol v2 (KServe V2, Triton's HTTP/REST API), JSON form: inference
//! requests and responses, and the server and model metadata documents.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, de::IgnoredAny};
use serde_json::value::RawValue;

use super::{RequestError, binary, classes, json};
use crate::{
    model::{
        DataType, InputError, Signature, Tensor, TensorData, TensorSpec, tensor::element_count,
    },
    signing::Signed,
};

/// The platform name Triton and KServe report for ONNX Runtime models.
const PLATFORM: &str = "onnxruntime_onnx";

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<WireInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<WireRequestedOutput>>,
    #[serde(default)]
    parameters: RequestParameters,
}

#[derive(Deserialize, Default)]
struct RequestParameters {
    /// Binary tensor data extension: every output not saying otherwise is returned as binary.
    #[serde(default)]
    binary_data_output: bool,
}

#[derive(Deserialize)]
struct WireInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// Kept as raw text until the datatype is known, then decoded straight into its buffer.
    /// Absent when the tensor travels as binary data after the JSON header.
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    parameters: InputParameters,
}

#[derive(Deserialize, Default)]
struct InputParameters {
    binary_data_size: Option<usize>,
    shared_memory_region: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct WireRequestedOutput {
    name: String,
    #[serde(default)]
    parameters: OutputParameters,
}

#[derive(Deserialize, Default)]
struct OutputParameters {
    binary_data: Option<bool>,
    shared_memory_region: Option<IgnoredAny>,
    /// Triton's classification extension: answer the top K classes instead of the tensor.
    classification: Option<usize>,
}

/// An inference request checked against the model's signature.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    /// Inputs bound in signature order.
    pub inputs: Vec<Tensor>,
    /// Signature indices of the outputs to return, in the order they were requested.
    pub outputs: Vec<usize>,
    /// For each of `outputs`: whether it is returned as binary data after the JSON header.
    pub binary_outputs: Vec<bool>,
    /// For each of `outputs`: the number of top classes asked for with the classification
    /// extension, `None` for the tensor itself.
    pub classification: Vec<Option<usize>>,
}

/// Decodes a request body. `json_length` is the `Inference-Header-Content-Length` header: when
/// present, the body is that many bytes of JSON followed by the binary data of the inputs that
/// declare a `binary_data_size`, in the order they are listed.
pub fn decode_request(
    body: &[u8],
    json_length: Option<usize>,
    signature: &Signature,
) -> Result<InferRequest, RequestError> {
    let (header, mut binary) = match json_length {
        Some(length) if length > body.len() => {
            return Err(RequestError::Malformed(format!(
                "the {INFERENCE_HEADER_CONTENT_LENGTH} header says {length} bytes of JSON, but the body has only {} bytes",
                body.len()
            )));
        }
        Some(length) => body.split_at(length),
        None => (body, &[][..]),
    };
    let wire: WireRequest = serde_json::from_slice(header).map_err(RequestError::malformed)?;
    check_id(wire.id.as_deref())?;
    let binary_total = binary.len();
    let mut named = Vec::with_capacity(wire.inputs.len());
    for input in wire.inputs {
        let data = match (input.data, input.parameters.binary_data_size) {
            _ if input.parameters.shared_memory_region.is_some() => {
                return Err(unsupported_input(
                    &input.name,
                    "shared memory inputs are not supported; send the data in the body",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(unsupported_input(
                    &input.name,
                    "has both data and binary_data_size; give one",
                ));
            }
            (Some(json), None) => InputData::Json(json.get()),
            (None, Some(size)) => {
                if json_length.is_none() {
                    return Err(unsupported_input(
                        &input.name,
                        &format!(
                            "declares binary_data_size but the request has no {INFERENCE_HEADER_CONTENT_LENGTH} header"
                        ),
                    ));
                }
                if size > binary.len() {
                    return Err(unsupported_input(
                        &input.name,
                        &format!(
                            "declares binary_data_size {size}, but only {} bytes of binary data are left after the inputs before it",
                            binary.len()
                        ),
                    ));
                }
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                InputData::Binary(bytes)
            }
            (None, None) => {
                return Err(unsupported_input(
                    &input.name,
                    "has neither data nor a binary_data_size",
                ));
            }
        };
        named.push(decode_input(
            &input.name,
            &input.shape,
            &input.datatype,
            data,
            signature,
        )?);
    }
    if !binary.is_empty() {
        return Err(RequestError::Malformed(format!(
            "{binary_total} bytes of binary data follow the JSON header, but the inputs' binary_data_size add up to {}",
            binary_total - binary.len()
        )));
    }
    let inputs = signature.bind_inputs(named)?;
    let (outputs, binary_outputs, classification) =
        decode_outputs(wire.outputs.as_deref(), &wire.parameters, signature)?;
    Ok(InferRequest {
        id: wire.id,
        inputs,
        outputs,
        binary_outputs,
        classification,
    })
}

type DecodedOutputs = (Vec<usize>, Vec<bool>, Vec<Option<usize>>);

/// The outputs to answer, in order, with how each is returned.
fn decode_outputs(
    requested: Option<&[WireRequestedOutput]>,
    parameters: &RequestParameters,
    signature: &Signature,
) -> Result<DecodedOutputs, RequestError> {
    let default_binary = parameters.binary_data_output;
    let Some(requested) = requested else {
        let indices = signature.select_outputs(None::<std::iter::Empty<&str>>)?;
        let count = indices.len();
        return Ok((indices, vec![default_binary; count], vec![None; count]));
    };
    if requested.is_empty() {
        return Err(RequestError::Malformed(
            "\"outputs\" is empty: name at least one output, or leave \"outputs\" out to get all of them"
                .to_owned(),
        ));
    }
    let indices =
        signature.select_outputs(Some(requested.iter().map(|output| output.name.as_str())))?;
    for (output, &index) in requested.iter().zip(&indices) {
        check_output_form(output, &signature.outputs[index])?;
    }
    let binary = requested
        .iter()
        .map(|output| output.parameters.binary_data.unwrap_or(default_binary))
        .collect();
    let classification = requested
        .iter()
        .map(|output| output.parameters.classification)
        .collect();
    Ok((indices, binary, classification))
}

fn check_output_form(output: &WireRequestedOutput, spec: &TensorSpec) -> Result<(), RequestError> {
    check_output_parameters(
        &output.name,
        output.parameters.shared_memory_region.is_some(),
        output.parameters.classification,
        spec,
    )
}

/// Checks what a requested output's parameters ask for (the same over REST and gRPC): no
/// shared memory, and a classification of at least one class of a numeric output.
pub(crate) fn check_output_parameters(
    name: &str,
    shared_memory: bool,
    classification: Option<usize>,
    spec: &TensorSpec,
) -> Result<(), RequestError> {
    let refuse = |problem: &str| {
        Err(RequestError::UnsupportedForm(format!(
            "output '{name}': {problem}"
        )))
    };
    if shared_memory {
        return refuse("shared memory outputs are not supported");
    }
    match classification {
        Some(0) => refuse("\"classification\" must ask for at least 1 class"),
        Some(_) if spec.datatype == DataType::Bytes => {
            refuse("classification ranks numbers; this output holds BYTES")
        }
        _ => Ok(()),
    }
}

/// The longest request `id` echoed back. Ids name requests in logs and traces; a longer one is
/// refused rather than copied into the answer, where serialising it would cost the runtime
/// time that probes and small requests need.
const MAX_ID_BYTES: usize = 1024;

pub(crate) fn check_id(id: Option<&str>) -> Result<(), RequestError> {
    match id {
        Some(id) if id.len() > MAX_ID_BYTES => Err(RequestError::Malformed(format!(
            "\"id\" is {} bytes long; at most {MAX_ID_BYTES} bytes are accepted",
            id.len()
        ))),
        _ => Ok(()),
    }
}

/// The header of the binary tensor data extension: the length of the JSON part of the body.
pub(crate) const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

fn unsupported_input(name: &str, problem: &str) -> RequestError {
    RequestError::Input(InputError::bad_data(name, problem.to_owned()))
}

/// Where an input's values are: JSON text, or bytes of the binary extension.
enum InputData<'a> {
    Json(&'a str),
    Binary(&'a [u8]),
}

fn decode_input(
    name: &str,
    wire_shape: &[i64],
    wire_datatype: &str,
    data: InputData<'_>,
    signature: &Signature,
) -> Result<(String, Tensor), InputError> {
    let declared = check_input(name, wire_shape, wire_datatype, signature)?;
    let data = match data {
        InputData::Json(text) => json::decode_raw(declared.datatype, text, declared.elements)
            .map_err(|err| InputError::bad_data(name, format!("data: {err}")))?,
        InputData::Binary(bytes) => binary::decode(declared.datatype, bytes, declared.elements)
            .map_err(|err| InputError::bad_data(name, format!("binary data: {err}")))?,
    };
    declared.into_tensor(name, data)
}

/// An input's datatype and shape as the request declares them, checked against the model's
/// signature before any of its values are read.
pub(crate) struct DeclaredInput {
    pub(crate) datatype: DataType,
    pub(crate) shape: Vec<usize>,
    /// How many values the shape holds.
    pub(crate) elements: usize,
}

impl DeclaredInput {
    /// The named tensor, once its values are decoded.
    pub(crate) fn into_tensor(
        self,
        name: &str,
        data: TensorData,
    ) -> Result<(String, Tensor), InputError> {
        let tensor =
            Tensor::new(self.shape, data).map_err(|err| InputError::bad_data(name, err))?;
        Ok((name.to_owned(), tensor))
    }
}

/// Checks an input's name, datatype and shape (the same for JSON, binary and gRPC requests).
pub(crate) fn check_input(
    name: &str,
    wire_shape: &[i64],
    wire_datatype: &str,
    signature: &Signature,
) -> Result<DeclaredInput, InputError> {
    let spec = signature.input(name)?;
    let datatype = DataType::from_protocol_name(wire_datatype).ok_or_else(|| {
        InputError::bad_data(
            name,
            format!(
                "unknown datatype '{wire_datatype}'; the model expects {}",
                spec.datatype
            ),
        )
    })?;
    spec.check_datatype(datatype)?;
    let shape = wire_shape
        .iter()
        .map(|&dim| usize::try_from(dim))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| {
            InputError::bad_data(
                name,
                format!("shape {wire_shape:?} has a negative dimension"),
            )
        })?;
    spec.check_shape(&shape)?;
    let elements = element_count(&shape)
        .ok_or_else(|| InputError::bad_data(name, format!("shape {shape:?} is too large")))?;
    Ok(DeclaredInput {
        datatype,
        shape,
        elements,
    })
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
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<json::FlatJson<'a>>,
    #[serde(skip_serializing_if = "ResponseParameters::is_empty")]
    parameters: ResponseParameters,
}

#[derive(Serialize, Default)]
struct ResponseParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    binary_data_size: Option<usize>,
    /// A ZipMap output's labels, see [`classes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    class_labels: Option<String>,
}

impl ResponseParameters {
    fn is_empty(&self) -> bool {
        self.binary_data_size.is_none() && self.class_labels.is_none()
    }
}

/// A response body, and the length of its JSON part when binary output data follows it (the
/// value of the `Inference-Header-Content-Length` header).
pub struct EncodedResponse {
    pub(crate) body: Vec<u8>,
    pub(crate) json_length: Option<usize>,
}

/// Writes the response for `outputs`, which hold the tensors for `request.outputs` in order.
pub fn encode_response(
    model: (&str, &str),
    request: &InferRequest,
    signature: &Signature,
    outputs: &[Tensor],
) -> EncodedResponse {
    let answered = answered_outputs(
        &request.outputs,
        &request.classification,
        signature,
        outputs,
    );
    let mut binary = Vec::new();
    let wire_outputs = answered
        .iter()
        .zip(&request.binary_outputs)
        .map(|((spec, tensor), &as_binary)| wire_output(spec, tensor, as_binary, &mut binary))
        .collect();
    let response = WireResponse {
        model_name: model.0,
        model_version: model.1,
        id: request.id.as_deref(),
        outputs: wire_outputs,
    };
    let mut body = serde_json::to_vec(&response).expect("serialising to memory does not fail");
    let json_length = request.binary_outputs.contains(&true).then_some(body.len());
    body.append(&mut binary);
    EncodedResponse { body, json_length }
}

/// Each requested output with its spec, as the tensor itself or its top classes.
pub(crate) fn answered_outputs<'a>(
    indices: &[usize],
    classification: &[Option<usize>],
    signature: &'a Signature,
    outputs: &'a [Tensor],
) -> Vec<(&'a TensorSpec, Cow<'a, Tensor>)> {
    indices
        .iter()
        .zip(classification)
        .zip(outputs)
        .map(|((&index, &classification), tensor)| {
            let spec = &signature.outputs[index];
            let tensor = match classification {
                Some(count) => {
                    Cow::Owned(classes::classify(tensor, count, spec.class_labels.as_ref()))
                }
                None => Cow::Borrowed(tensor),
            };
            (spec, tensor)
        })
        .collect()
}

/// A ZipMap output's labels (JSON array text) for its answer's parameters, unless
/// classification already wrote them into its strings.
pub(crate) fn class_labels_of(spec: &TensorSpec, tensor: &Tensor) -> Option<String> {
    let labels = spec.class_labels.as_ref()?;
    (tensor.datatype() == spec.datatype).then(|| classes::labels_json(labels))
}

/// One output's JSON; its data go to `binary` when it is returned as binary. A ZipMap output
/// carries its labels, unless classification already wrote them into its strings.
fn wire_output<'a>(
    spec: &'a TensorSpec,
    tensor: &'a Tensor,
    as_binary: bool,
    binary: &mut Vec<u8>,
) -> WireOutput<'a> {
    let mut parameters = ResponseParameters {
        class_labels: class_labels_of(spec, tensor),
        ..ResponseParameters::default()
    };
    let data = if as_binary {
        parameters.binary_data_size = Some(binary::encode(tensor.data(), binary));
        None
    } else {
        Some(json::FlatJson(tensor.data()))
    };
    WireOutput {
        name: &spec.name,
        datatype: tensor.datatype().as_str(),
        shape: tensor.shape(),
        data,
        parameters,
    }
}

/// `GET /v2`.
#[derive(Serialize)]
pub(crate) struct ServerMetadata {
    pub(crate) name: &'static str,
    pub(crate) version: &'static str,
    pub(crate) extensions: Vec<&'static str>,
}

impl ServerMetadata {
    pub(crate) fn current() -> ServerMetadata {
        ServerMetadata {
            name: "pinserve",
            version: env!("CARGO_PKG_VERSION"),
            extensions: vec!["binary_tensor_data", "classification", "statistics"],
        }
    }
}

/// `GET /v2/models/{name}[/versions/{version}]`.
#[derive(Serialize)]
pub(crate) struct ModelMetadata<'a> {
    pub(crate) name: &'a str,
    pub(crate) versions: Vec<&'a str>,
    pub(crate) platform: &'static str,
    pub(crate) inputs: Vec<TensorMetadata<'a>>,
    pub(crate) outputs: Vec<TensorMetadata<'a>>,
    /// Extra facts about the model, such as its MLflow signature.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub(crate) parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
pub(crate) struct TensorMetadata<'a> {
    pub(crate) name: &'a str,
    pub(crate) datatype: &'static str,
    pub(crate) shape: Vec<i64>,
    /// A ZipMap output's labels and the ONNX type it has in the graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parameters: Option<ZipMapParameters>,
}

#[derive(Serialize)]
pub(crate) struct ZipMapParameters {
    pub(crate) class_labels: String,
    onnx_type: String,
}

impl<'a> From<&'a TensorSpec> for TensorMetadata<'a> {
    fn from(spec: &'a TensorSpec) -> Self {
        TensorMetadata {
            name: &spec.name,
            datatype: spec.datatype.as_str(),
            shape: spec.protocol_shape(),
            parameters: spec.class_labels.as_ref().map(|labels| ZipMapParameters {
                class_labels: classes::labels_json(labels),
                onnx_type: format!("seq(map({},tensor(float)))", labels.key_type()),
            }),
        }
    }
}

impl<'a> ModelMetadata<'a> {
    pub(crate) fn new(name: &'a str, version: &'a str, signature: &'a Signature) -> Self {
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
    pub(crate) fn with_mlflow_signature(mut self, signature: Option<&serde_json::Value>) -> Self {
        if let Some(signature) = signature {
            self.parameters
                .insert("mlflow_signature".to_owned(), signature.clone());
        }
        self
    }

    /// The verified signer and the SHA-256 of the statement it signed.
    pub(crate) fn with_model_signature(mut self, signed: Option<&Signed>) -> Self {
        if let Some(signed) = signed {
            self.parameters
                .insert("signer".to_owned(), signed.signer.clone().into());
            self.parameters.insert(
                "signed_statement_sha256".to_owned(),
                signed.statement_sha256.to_string().into(),
            );
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ClassLabels, TensorData,
        signature::examples::{batch, column, matrix, one_input},
    };

    fn signature() -> Signature {
        one_input(
            "features",
            2,
            vec![
                column("label", DataType::Int64),
                matrix("score", DataType::Fp32, 1),
            ],
        )
    }

    fn decode(body: &str) -> Result<InferRequest, String> {
        decode_request(body.as_bytes(), None, &signature()).map_err(|e| e.to_string())
    }

    /// A body in the binary extension's layout: the JSON header, then `binary`.
    fn decode_binary(header: &str, binary: &[u8]) -> Result<InferRequest, String> {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(binary);
        decode_request(&body, Some(header.len()), &signature()).map_err(|e| e.to_string())
    }

    fn le_floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
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
    fn an_empty_outputs_list_is_refused() {
        let err = decode(
            r#"{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
                "outputs": []}"#,
        )
        .unwrap_err();
        assert!(err.contains("\"outputs\" is empty"), "{err}");
    }

    #[test]
    fn ids_longer_than_the_limit_are_refused() {
        let body = |id: &str| {
            format!(
                r#"{{"id": "{id}", "inputs": [{{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}}]}}"#
            )
        };
        let longest = "x".repeat(MAX_ID_BYTES);
        assert_eq!(decode(&body(&longest)).unwrap().id, Some(longest));
        let err = decode(&body(&"x".repeat(MAX_ID_BYTES + 1))).unwrap_err();
        assert!(
            err.contains("\"id\" is 1025 bytes long; at most 1024"),
            "{err}"
        );
    }

    #[test]
    fn encodes_outputs_with_their_names_and_shapes() {
        let sig = signature();
        let outputs = vec![Tensor::new(vec![2, 1], TensorData::Fp32(vec![0.25, 0.5])).unwrap()];
        let request = InferRequest {
            id: Some("r1".into()),
            inputs: Vec::new(),
            outputs: vec![1],
            binary_outputs: vec![false],
            classification: vec![None],
        };
        let encoded = encode_response(("m", "3"), &request, &sig, &outputs);
        assert_eq!(encoded.json_length, None);
        let value: serde_json::Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"model_name": "m", "model_version": "3", "id": "r1",
                "outputs": [{"name": "score", "datatype": "FP32", "shape": [2, 1], "data": [0.25, 0.5]}]})
        );
    }

    #[test]
    fn binary_inputs_are_read_after_the_json_header_in_order() {
        let header = r#"{"inputs": [{"name": "features", "shape": [2, 2], "datatype": "FP32",
            "parameters": {"binary_data_size": 16}}],
            "outputs": [{"name": "score", "parameters": {"binary_data": true}}, {"name": "label"}]}"#;
        let request = decode_binary(header, &le_floats(&[1.0, 2.0, 3.0, 4.0])).unwrap();
        assert_eq!(
            request.inputs[0].data(),
            &TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(request.outputs, vec![1, 0]);
        assert_eq!(request.binary_outputs, vec![true, false]);
    }

    #[test]
    fn binary_data_output_applies_to_outputs_that_do_not_say() {
        let request = decode(
            r#"{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
                "parameters": {"binary_data_output": true}}"#,
        )
        .unwrap();
        assert_eq!(request.binary_outputs, vec![true, true]);
    }

    #[test]
    fn binary_sizes_that_do_not_add_up_are_refused() {
        let input = |size: usize| {
            format!(
                r#"{{"inputs": [{{"name": "features", "shape": [1, 2], "datatype": "FP32", "parameters": {{"binary_data_size": {size}}}}}]}}"#
            )
        };
        let floats = le_floats(&[1.0, 2.0]);
        assert!(decode_binary(&input(8), &floats).is_ok());
        let short = decode_binary(&input(12), &floats).unwrap_err();
        assert!(
            short.contains("only 8 bytes of binary data are left"),
            "{short}"
        );
        let extra = decode_binary(&input(8), &le_floats(&[1.0, 2.0, 3.0])).unwrap_err();
        assert!(extra.contains("12 bytes of binary data follow"), "{extra}");
        let mismatch = decode_binary(&input(4), &floats[..4]).unwrap_err();
        assert!(
            mismatch.contains("binary data: 4 bytes cannot hold 2 FP32"),
            "{mismatch}"
        );
        let headerless = decode(&input(8)).unwrap_err();
        assert!(
            headerless.contains("no inference-header-content-length header"),
            "{headerless}"
        );
        let beyond = decode_request(b"{}", Some(10), &signature()).unwrap_err();
        assert!(
            beyond.to_string().contains("says 10 bytes of JSON"),
            "{beyond}"
        );
    }

    #[test]
    fn inputs_need_exactly_one_source_of_data() {
        let both = decode(
            r#"{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2],
                "parameters": {"binary_data_size": 8}}]}"#,
        )
        .unwrap_err();
        assert!(both.contains("both data and binary_data_size"), "{both}");
        let neither =
            decode(r#"{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32"}]}"#)
                .unwrap_err();
        assert!(
            neither.contains("neither data nor a binary_data_size"),
            "{neither}"
        );
        let shared = decode(
            r#"{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32",
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 8}}]}"#,
        )
        .unwrap_err();
        assert!(
            shared.contains("shared memory inputs are not supported"),
            "{shared}"
        );
    }

    #[test]
    fn binary_outputs_follow_the_json_header_with_their_sizes() {
        let sig = signature();
        let outputs = vec![
            Tensor::new(vec![2, 1], TensorData::Fp32(vec![0.25, 0.5])).unwrap(),
            Tensor::new(vec![2], TensorData::Int64(vec![1, 0])).unwrap(),
        ];
        let request = InferRequest {
            id: None,
            inputs: Vec::new(),
            outputs: vec![1, 0],
            binary_outputs: vec![true, false],
            classification: vec![None, None],
        };
        let encoded = encode_response(("m", "3"), &request, &sig, &outputs);
        let length = encoded.json_length.expect("a binary output");
        let (header, binary) = encoded.body.split_at(length);
        let value: serde_json::Value = serde_json::from_slice(header).unwrap();
        assert_eq!(
            value["outputs"],
            serde_json::json!([
                {"name": "score", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}},
                {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]}
            ])
        );
        assert_eq!(binary, le_floats(&[0.25, 0.5]).as_slice());
    }

    #[test]
    fn metadata_reports_dynamic_dims_as_minus_one() {
        let sig = signature();
        let metadata = serde_json::to_value(ModelMetadata::new("m", "3", &sig)).unwrap();
        assert_eq!(metadata["platform"], "onnxruntime_onnx");
        assert_eq!(metadata["versions"], serde_json::json!(["3"]));
        assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, 2]));
    }

    fn classifier() -> Signature {
        Signature {
            inputs: signature().inputs,
            outputs: vec![
                TensorSpec::new("label", DataType::Bytes, vec![batch()]),
                TensorSpec::zipmap(
                    "probabilities",
                    ClassLabels::Strings(vec!["no".into(), "yes".into()]),
                ),
            ],
        }
    }

    fn classifier_request(outputs: &str) -> Result<InferRequest, String> {
        let body = format!(
            r#"{{"inputs": [{{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}}],
                "outputs": {outputs}}}"#
        );
        decode_request(body.as_bytes(), None, &classifier()).map_err(|e| e.to_string())
    }

    #[test]
    fn classification_is_read_per_output_and_checked() {
        let request = classifier_request(
            r#"[{"name": "probabilities", "parameters": {"classification": 1}}, {"name": "label"}]"#,
        )
        .unwrap();
        assert_eq!(request.classification, vec![Some(1), None]);
        let zero = classifier_request(
            r#"[{"name": "probabilities", "parameters": {"classification": 0}}]"#,
        )
        .unwrap_err();
        assert!(zero.contains("at least 1 class"), "{zero}");
        let strings =
            classifier_request(r#"[{"name": "label", "parameters": {"classification": 2}}]"#)
                .unwrap_err();
        assert!(strings.contains("this output holds BYTES"), "{strings}");
    }

    #[test]
    fn zipmap_outputs_carry_their_labels_unless_classified() {
        let sig = classifier();
        let probabilities = Tensor::new(vec![1, 2], TensorData::Fp32(vec![0.25, 0.75])).unwrap();
        let mut request = InferRequest {
            id: None,
            inputs: Vec::new(),
            outputs: vec![1],
            binary_outputs: vec![false],
            classification: vec![None],
        };
        let answer = |request: &InferRequest| {
            let encoded = encode_response(
                ("m", "1"),
                request,
                &sig,
                std::slice::from_ref(&probabilities),
            );
            serde_json::from_slice::<serde_json::Value>(&encoded.body).unwrap()["outputs"][0]
                .clone()
        };
        assert_eq!(
            answer(&request),
            serde_json::json!({"name": "probabilities", "datatype": "FP32", "shape": [1, 2],
                "data": [0.25, 0.75], "parameters": {"class_labels": "[\"no\",\"yes\"]"}})
        );
        request.classification = vec![Some(1)];
        assert_eq!(
            answer(&request),
            serde_json::json!({"name": "probabilities", "datatype": "BYTES", "shape": [1, 1],
                "data": ["0.75:1:yes"]})
        );
    }

    #[test]
    fn metadata_gives_a_zipmap_its_labels_and_onnx_type() {
        let sig = classifier();
        let metadata = serde_json::to_value(ModelMetadata::new("m", "1", &sig)).unwrap();
        assert_eq!(
            metadata["outputs"][1],
            serde_json::json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 2],
                "parameters": {"class_labels": "[\"no\",\"yes\"]",
                    "onnx_type": "seq(map(string,tensor(float)))"}})
        );
        assert!(metadata["outputs"][0].get("parameters").is_none());
    }
}
