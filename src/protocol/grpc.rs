//! The Open Inference Protocol over gRPC (KServe V2's `GRPCInferenceService`): the messages of
//! `proto/inference.proto`, compiled at build time, and their conversion to and from tensors.
//! Inputs are checked by the same code as the REST protocol's ([`v2::check_input`]); values come
//! either from `raw_input_contents` (the binary extension's layout) or from the typed
//! `contents` fields. Outputs always go back as `raw_output_contents`, as Triton answers.

use super::{RequestError, binary, v2};
use crate::{
    batch::stats::{BatchStats, Duration2, ModelStatsReport},
    model::{DataType, InputError, Signature, Tensor, TensorData},
};

/// The generated messages and service.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
    model_infer_response::InferOutputTensor,
};

/// A `ModelInfer` request checked against the model's signature.
#[derive(Debug)]
pub(crate) struct GrpcInferRequest {
    pub(crate) id: String,
    /// Inputs bound in signature order.
    pub(crate) inputs: Vec<Tensor>,
    /// Signature indices of the outputs to return, in the order they were requested.
    pub(crate) outputs: Vec<usize>,
    /// For each of `outputs`: the number of top classes asked for with the classification
    /// extension, if any.
    pub(crate) classification: Vec<Option<usize>>,
}

/// Decodes a `ModelInfer` request into the model's inputs and the outputs it asks for.
pub(crate) fn decode_request(
    request: ModelInferRequest,
    signature: &Signature,
) -> Result<GrpcInferRequest, RequestError> {
    v2::check_id(Some(&request.id))?;
    let ModelInferRequest {
        id,
        inputs,
        outputs,
        raw_input_contents,
        ..
    } = request;
    let raw = raw_contents(&inputs, raw_input_contents)?;
    let named = inputs
        .into_iter()
        .zip(raw)
        .map(|(input, raw)| decode_input(input, raw, signature))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = signature.bind_inputs(named)?;
    let (outputs, classification) = select_outputs(&outputs, signature)?;
    Ok(GrpcInferRequest {
        id,
        inputs,
        outputs,
        classification,
    })
}

/// Pairs each input with its raw contents: all of them when the request uses
/// `raw_input_contents` (one entry per input), none otherwise.
fn raw_contents(
    inputs: &[InferInputTensor],
    raw: Vec<Vec<u8>>,
) -> Result<Vec<Option<Vec<u8>>>, RequestError> {
    if raw.is_empty() {
        return Ok(inputs.iter().map(|_| None).collect());
    }
    if raw.len() != inputs.len() {
        return Err(RequestError::Malformed(format!(
            "raw_input_contents has {} entries for {} inputs; give one per input, in order",
            raw.len(),
            inputs.len()
        )));
    }
    if let Some(input) = inputs.iter().find(|input| input.contents.is_some()) {
        return Err(RequestError::Malformed(format!(
            "input '{}' has contents while the request uses raw_input_contents; use one or the other for all inputs",
            input.name
        )));
    }
    Ok(raw.into_iter().map(Some).collect())
}

fn decode_input(
    input: InferInputTensor,
    raw: Option<Vec<u8>>,
    signature: &Signature,
) -> Result<(String, Tensor), InputError> {
    let name = input.name.as_str();
    if input.parameters.contains_key("shared_memory_region") {
        return Err(InputError::bad_data(
            name,
            "shared memory inputs are not supported; send the data in the request",
        ));
    }
    let declared = v2::check_input(name, &input.shape, &input.datatype, signature)?;
    let data = match (raw, input.contents) {
        (Some(bytes), _) => binary::decode(declared.datatype, &bytes, declared.elements)
            .map_err(|err| InputError::bad_data(name, format!("raw_input_contents: {err}")))?,
        (None, Some(contents)) => from_contents(declared.datatype, contents, declared.elements)
            .map_err(|err| InputError::bad_data(name, err))?,
        (None, None) => {
            return Err(InputError::bad_data(
                name,
                "has neither contents nor raw_input_contents",
            ));
        }
    };
    declared.into_tensor(name, data)
}

/// Why a tensor's typed contents cannot be its values.
#[derive(Debug, thiserror::Error, PartialEq)]
enum ContentsError {
    #[error("{datatype} has no contents field; send it in raw_input_contents")]
    NoField { datatype: DataType },
    #[error("{field} holds {got} values, but the shape holds {expected}")]
    WrongCount {
        field: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("{field} value {value} at index {index} is out of range for {datatype}")]
    OutOfRange {
        field: &'static str,
        value: i128,
        index: usize,
        datatype: DataType,
    },
    #[error("bytes_contents element {index} is not UTF-8 text ({source})")]
    NotText {
        index: usize,
        source: std::string::FromUtf8Error,
    },
}

/// The values of a tensor from the `contents` field its datatype uses (INT8 to INT32 share
/// `int_contents`, UINT8 to UINT32 `uint_contents`; narrower types are range-checked).
fn from_contents(
    datatype: DataType,
    contents: InferTensorContents,
    expected: usize,
) -> Result<TensorData, ContentsError> {
    let count = |field: &'static str, got: usize| {
        (got == expected)
            .then_some(())
            .ok_or(ContentsError::WrongCount {
                field,
                got,
                expected,
            })
    };
    macro_rules! same {
        ($variant:ident, $field:ident) => {{
            count(stringify!($field), contents.$field.len())?;
            TensorData::$variant(contents.$field)
        }};
    }
    macro_rules! narrowed {
        ($variant:ident, $field:ident) => {{
            count(stringify!($field), contents.$field.len())?;
            TensorData::$variant(narrow(stringify!($field), datatype, contents.$field)?)
        }};
    }
    Ok(match datatype {
        DataType::Bool => same!(Bool, bool_contents),
        DataType::Int8 => narrowed!(Int8, int_contents),
        DataType::Int16 => narrowed!(Int16, int_contents),
        DataType::Int32 => same!(Int32, int_contents),
        DataType::Int64 => same!(Int64, int64_contents),
        DataType::Uint8 => narrowed!(Uint8, uint_contents),
        DataType::Uint16 => narrowed!(Uint16, uint_contents),
        DataType::Uint32 => same!(Uint32, uint_contents),
        DataType::Uint64 => same!(Uint64, uint64_contents),
        DataType::Fp32 => same!(Fp32, fp32_contents),
        DataType::Fp64 => same!(Fp64, fp64_contents),
        DataType::Bytes => {
            count("bytes_contents", contents.bytes_contents.len())?;
            TensorData::Bytes(text(contents.bytes_contents)?)
        }
        DataType::Fp16 | DataType::Bf16 => return Err(ContentsError::NoField { datatype }),
    })
}

fn narrow<Wide, Narrow>(
    field: &'static str,
    datatype: DataType,
    values: Vec<Wide>,
) -> Result<Vec<Narrow>, ContentsError>
where
    Wide: Copy + Into<i128>,
    Narrow: TryFrom<Wide>,
{
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            Narrow::try_from(value).map_err(|_| ContentsError::OutOfRange {
                field,
                value: value.into(),
                index,
                datatype,
            })
        })
        .collect()
}

/// ONNX Runtime's string tensors hold UTF-8, as for the binary extension.
fn text(elements: Vec<Vec<u8>>) -> Result<Vec<String>, ContentsError> {
    elements
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| {
            String::from_utf8(bytes).map_err(|source| ContentsError::NotText { index, source })
        })
        .collect()
}

/// The requested outputs' signature indices (all outputs when none is named), with the classes
/// each asks for (Triton's client sends `classification` as an integer parameter).
fn select_outputs(
    requested: &[InferRequestedOutputTensor],
    signature: &Signature,
) -> Result<(Vec<usize>, Vec<Option<usize>>), RequestError> {
    let names =
        (!requested.is_empty()).then(|| requested.iter().map(|output| output.name.as_str()));
    let indices = signature.select_outputs(names)?;
    if requested.is_empty() {
        let count = indices.len();
        return Ok((indices, vec![None; count]));
    }
    let mut classification = Vec::with_capacity(requested.len());
    for (output, &index) in requested.iter().zip(&indices) {
        let count = class_count(output)?;
        v2::check_output_parameters(
            &output.name,
            output.parameters.contains_key("shared_memory_region"),
            count,
            &signature.outputs[index],
        )?;
        classification.push(count);
    }
    Ok((indices, classification))
}

fn class_count(output: &InferRequestedOutputTensor) -> Result<Option<usize>, RequestError> {
    let Some(parameter) = output.parameters.get("classification") else {
        return Ok(None);
    };
    let count = match &parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(count)) => usize::try_from(*count).ok(),
        Some(ParameterChoice::Uint64Param(count)) => usize::try_from(*count).ok(),
        _ => None,
    };
    count.map(Some).ok_or_else(|| {
        RequestError::UnsupportedForm(format!(
            "output '{}': \"classification\" must be a non-negative integer",
            output.name
        ))
    })
}

/// The answer to a request: each output's values in `raw_output_contents`, in order (its top
/// classes as BYTES where classification was asked for), a ZipMap output with its class labels
/// in the `class_labels` parameter as over REST.
pub(crate) fn encode_response(
    model: (&str, &str),
    request: &GrpcInferRequest,
    signature: &Signature,
    outputs: &[Tensor],
) -> ModelInferResponse {
    let answered = v2::answered_outputs(
        &request.outputs,
        &request.classification,
        signature,
        outputs,
    );
    let (tensors, raw) = answered
        .into_iter()
        .map(|(spec, tensor)| {
            let mut bytes = Vec::new();
            binary::encode(tensor.data(), &mut bytes);
            let mut metadata = InferOutputTensor {
                name: spec.name.clone(),
                datatype: tensor.datatype().as_str().to_owned(),
                shape: tensor.shape().iter().map(|&dim| dim as i64).collect(),
                ..InferOutputTensor::default()
            };
            if let Some(labels) = v2::class_labels_of(spec, &tensor) {
                let labels = ParameterChoice::StringParam(labels);
                metadata.parameters.insert(
                    "class_labels".to_owned(),
                    InferParameter {
                        parameter_choice: Some(labels),
                    },
                );
            }
            (metadata, bytes)
        })
        .unzip();
    ModelInferResponse {
        model_name: model.0.to_owned(),
        model_version: model.1.to_owned(),
        id: request.id.clone(),
        outputs: tensors,
        raw_output_contents: raw,
        ..ModelInferResponse::default()
    }
}

impl From<v2::ServerMetadata> for pb::ServerMetadataResponse {
    fn from(metadata: v2::ServerMetadata) -> Self {
        pb::ServerMetadataResponse {
            name: metadata.name.to_owned(),
            version: metadata.version.to_owned(),
            extensions: metadata.extensions.iter().map(|&e| e.to_owned()).collect(),
        }
    }
}

impl From<v2::ModelMetadata<'_>> for pb::ModelMetadataResponse {
    fn from(metadata: v2::ModelMetadata<'_>) -> Self {
        let tensors = |tensors: Vec<v2::TensorMetadata<'_>>| {
            tensors
                .into_iter()
                .map(|tensor| pb::model_metadata_response::TensorMetadata {
                    name: tensor.name.to_owned(),
                    datatype: tensor.datatype.to_owned(),
                    shape: tensor.shape,
                })
                .collect()
        };
        pb::ModelMetadataResponse {
            name: metadata.name.to_owned(),
            versions: metadata.versions.iter().map(|&v| v.to_owned()).collect(),
            platform: metadata.platform.to_owned(),
            inputs: tensors(metadata.inputs),
            outputs: tensors(metadata.outputs),
        }
    }
}

impl From<Duration2> for pb::StatisticDuration {
    fn from(duration: Duration2) -> Self {
        pb::StatisticDuration {
            count: duration.count,
            ns: duration.ns,
        }
    }
}

impl From<ModelStatsReport> for pb::ModelStatistics {
    fn from(report: ModelStatsReport) -> Self {
        let stats = report.inference_stats;
        pb::ModelStatistics {
            name: report.name,
            version: report.version,
            last_inference: report.last_inference,
            inference_count: report.inference_count,
            execution_count: report.execution_count,
            inference_stats: Some(pb::InferStatistics {
                success: Some(stats.success.into()),
                fail: Some(stats.fail.into()),
                queue: Some(stats.queue.into()),
                compute_input: Some(stats.compute_input.into()),
                compute_infer: Some(stats.compute_infer.into()),
                compute_output: Some(stats.compute_output.into()),
                cache_hit: Some(stats.cache_hit.into()),
                cache_miss: Some(stats.cache_miss.into()),
            }),
            batch_stats: report.batch_stats.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<BatchStats> for pb::InferBatchStatistics {
    fn from(batch: BatchStats) -> Self {
        pb::InferBatchStatistics {
            batch_size: batch.batch_size as u64,
            compute_input: Some(batch.compute_input.into()),
            compute_infer: Some(batch.compute_infer.into()),
            compute_output: Some(batch.compute_output.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::signature::examples::two_inputs;

    /// The typed contents a client would write for `data` (INT8-INT32 widened into
    /// `int_contents`, UINT8-UINT32 into `uint_contents`); `None` for FP16 and BF16, which have
    /// no field.
    fn contents_of(data: &TensorData) -> Option<InferTensorContents> {
        let mut contents = InferTensorContents::default();
        match data.clone() {
            TensorData::Bool(v) => contents.bool_contents = v,
            TensorData::Int8(v) => contents.int_contents = v.into_iter().map(i32::from).collect(),
            TensorData::Int16(v) => contents.int_contents = v.into_iter().map(i32::from).collect(),
            TensorData::Int32(v) => contents.int_contents = v,
            TensorData::Int64(v) => contents.int64_contents = v,
            TensorData::Uint8(v) => contents.uint_contents = v.into_iter().map(u32::from).collect(),
            TensorData::Uint16(v) => {
                contents.uint_contents = v.into_iter().map(u32::from).collect();
            }
            TensorData::Uint32(v) => contents.uint_contents = v,
            TensorData::Uint64(v) => contents.uint64_contents = v,
            TensorData::Fp32(v) => contents.fp32_contents = v,
            TensorData::Fp64(v) => contents.fp64_contents = v,
            TensorData::Bytes(v) => {
                contents.bytes_contents = v.into_iter().map(String::into_bytes).collect();
            }
            TensorData::Fp16(_) | TensorData::Bf16(_) => return None,
        }
        Some(contents)
    }

    fn any_tensor_data() -> impl Strategy<Value = TensorData> {
        let values = |len| proptest::collection::vec(any::<u8>(), len);
        prop_oneof![
            proptest::collection::vec(any::<bool>(), 0..16).prop_map(TensorData::Bool),
            proptest::collection::vec(any::<i8>(), 0..16).prop_map(TensorData::Int8),
            proptest::collection::vec(any::<i16>(), 0..16).prop_map(TensorData::Int16),
            proptest::collection::vec(any::<i32>(), 0..16).prop_map(TensorData::Int32),
            proptest::collection::vec(any::<i64>(), 0..16).prop_map(TensorData::Int64),
            values(0..16).prop_map(TensorData::Uint8),
            proptest::collection::vec(any::<u16>(), 0..16).prop_map(TensorData::Uint16),
            proptest::collection::vec(any::<u32>(), 0..16).prop_map(TensorData::Uint32),
            proptest::collection::vec(any::<u64>(), 0..16).prop_map(TensorData::Uint64),
            proptest::collection::vec(-1e6f32..1e6, 0..16).prop_map(TensorData::Fp32),
            proptest::collection::vec(-1e12f64..1e12, 0..16).prop_map(TensorData::Fp64),
            proptest::collection::vec(".{0,8}", 0..8).prop_map(TensorData::Bytes),
        ]
    }

    proptest! {
        /// Typed contents and raw contents of the same values decode to the same tensor, and
        /// the raw answer pinserve sends back reads as those values again.
        #[test]
        fn typed_and_raw_contents_decode_to_the_same_values(data in any_tensor_data()) {
            let datatype = data.datatype();
            let contents = contents_of(&data).expect("every generated type has a field");
            let typed = from_contents(datatype, contents, data.len()).unwrap();
            prop_assert_eq!(&typed, &data);
            let mut raw = Vec::new();
            binary::encode(&data, &mut raw);
            prop_assert_eq!(binary::decode(datatype, &raw, data.len()).unwrap(), data);
        }

        /// Any values in the shared INT8-INT32 field are either taken exactly or refused as out
        /// of range, naming the index of the first that does not fit.
        #[test]
        fn narrowing_keeps_values_or_names_the_first_that_does_not_fit(
            values in proptest::collection::vec(any::<i32>(), 1..16)
        ) {
            let contents = InferTensorContents { int_contents: values.clone(), ..Default::default() };
            match from_contents(DataType::Int16, contents, values.len()) {
                Ok(TensorData::Int16(narrow)) => {
                    prop_assert!(narrow.iter().zip(&values).all(|(&n, &w)| i32::from(n) == w));
                }
                Err(ContentsError::OutOfRange { index, .. }) => {
                    prop_assert!(i16::try_from(values[index]).is_err());
                    prop_assert!(values[..index].iter().all(|&v| i16::try_from(v).is_ok()));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    #[test]
    fn contents_in_the_wrong_field_or_of_the_wrong_count_are_named() {
        let fp64 = InferTensorContents {
            fp64_contents: vec![1.0],
            ..Default::default()
        };
        assert_eq!(
            from_contents(DataType::Fp32, fp64, 1)
                .unwrap_err()
                .to_string(),
            "fp32_contents holds 0 values, but the shape holds 1"
        );
        assert_eq!(
            from_contents(DataType::Fp16, InferTensorContents::default(), 1)
                .unwrap_err()
                .to_string(),
            "FP16 has no contents field; send it in raw_input_contents"
        );
        let bytes = InferTensorContents {
            bytes_contents: vec![vec![0xff]],
            ..Default::default()
        };
        assert!(
            from_contents(DataType::Bytes, bytes, 1)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
    }

    fn churn_request(raw: Vec<Vec<u8>>, contents: bool) -> ModelInferRequest {
        let input = |name: &str, datatype: &str, contents| InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![1, 1],
            contents,
            ..Default::default()
        };
        let plan = contents.then(|| InferTensorContents {
            bytes_contents: vec![b"pro".to_vec()],
            ..Default::default()
        });
        let tenure = contents.then(|| InferTensorContents {
            fp32_contents: vec![3.0],
            ..Default::default()
        });
        ModelInferRequest {
            id: "r1".into(),
            inputs: vec![
                input("tenure", "FP32", tenure),
                input("plan", "BYTES", plan),
            ],
            raw_input_contents: raw,
            ..Default::default()
        }
    }

    #[test]
    fn inputs_are_bound_in_signature_order_from_either_form() {
        let signature = two_inputs();
        let typed = decode_request(churn_request(Vec::new(), true), &signature).unwrap();
        let raw = vec![
            3.0f32.to_le_bytes().to_vec(),
            [&3u32.to_le_bytes()[..], b"pro"].concat(),
        ];
        let raw = decode_request(churn_request(raw, false), &signature).unwrap();
        for request in [&typed, &raw] {
            assert_eq!(
                request.inputs[0].data(),
                &TensorData::Bytes(vec!["pro".into()])
            );
            assert_eq!(request.inputs[1].data(), &TensorData::Fp32(vec![3.0]));
            assert_eq!(request.outputs, vec![0, 1]);
        }
    }

    #[test]
    fn raw_contents_must_cover_every_input_and_stand_alone() {
        let signature = two_inputs();
        let one_short = decode_request(churn_request(vec![vec![0; 4]], false), &signature);
        assert!(
            one_short
                .unwrap_err()
                .to_string()
                .contains("raw_input_contents has 1 entries for 2 inputs")
        );
        let both = decode_request(
            churn_request(vec![vec![0; 4], vec![0; 4]], true),
            &signature,
        );
        assert!(both.unwrap_err().to_string().contains("one or the other"));
        let neither = decode_request(churn_request(Vec::new(), false), &signature);
        assert!(
            neither
                .unwrap_err()
                .to_string()
                .contains("neither contents nor raw_input_contents")
        );
    }

    #[test]
    fn answers_carry_each_requested_output_raw_in_order() {
        let signature = two_inputs();
        let request = GrpcInferRequest {
            id: "r1".into(),
            inputs: Vec::new(),
            outputs: vec![1, 0],
            classification: vec![None, None],
        };
        let outputs = [
            Tensor::new(vec![1, 2], TensorData::Fp32(vec![0.25, 0.75])).unwrap(),
            Tensor::new(vec![1], TensorData::Int64(vec![1])).unwrap(),
        ];
        let answer = encode_response(("churn", "3"), &request, &signature, &outputs);
        assert_eq!(
            (answer.model_name.as_str(), answer.model_version.as_str()),
            ("churn", "3")
        );
        assert_eq!(answer.id, "r1");
        assert_eq!(answer.outputs[0].name, "probabilities");
        assert_eq!(answer.outputs[0].datatype, "FP32");
        assert_eq!(answer.outputs[0].shape, vec![1, 2]);
        assert_eq!(answer.outputs[1].name, "label");
        assert_eq!(
            answer.raw_output_contents[0],
            [0.25f32.to_le_bytes(), 0.75f32.to_le_bytes()].concat()
        );
        assert_eq!(answer.raw_output_contents[1], 1i64.to_le_bytes());
    }
}
