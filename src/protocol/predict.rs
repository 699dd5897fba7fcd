//! `/predict` and `/v1/models/{name}:predict`: the TF Serving / KServe V1 form.
//!
//! Row form, `{"instances": [...]}`: one entry per example. For a single-input model an entry
//! is that input's row; otherwise it is an object keyed by input name. The answer is
//! `{"predictions": [...]}`, one entry per example (an object keyed by output name when the
//! model has several outputs).
//!
//! Columnar form, `{"inputs": ...}`: the input's whole tensor (or an object of them) answered
//! by `{"outputs": ...}` in the same shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};
use serde_json::value::RawValue;

use super::{RequestError, classes::LabeledRow, json};
use crate::model::{ClassLabels, InputError, Signature, Tensor, TensorData, TensorSpec};

/// Which of the two forms a request used; the answer uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    Rows { count: usize },
    Columns,
}

#[derive(Debug)]
pub(crate) struct PredictRequest {
    pub(crate) form: Form,
    /// Inputs bound in signature order.
    pub(crate) inputs: Vec<Tensor>,
}

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(borrow, default)]
    instances: Option<&'a RawValue>,
    #[serde(borrow, default)]
    inputs: Option<&'a RawValue>,
}

/// Decodes a request straight into tensors: the body's JSON is read once, each input's values
/// land in their typed buffer, and no `serde_json::Value` tree is built (one costs 10-30 times
/// the body's size).
pub(crate) fn decode_request(
    body: &[u8],
    signature: &Signature,
) -> Result<PredictRequest, RequestError> {
    let text = std::str::from_utf8(body).map_err(RequestError::malformed)?;
    if first_char(text) != Some('{') {
        return Err(RequestError::Malformed(
            "expected a JSON object with \"instances\" or \"inputs\"".to_owned(),
        ));
    }
    let wire: WireRequest = serde_json::from_str(text).map_err(RequestError::malformed)?;
    let (form, named) = match (wire.instances, wire.inputs) {
        (Some(instances), None) => decode_rows(instances.get(), signature)?,
        (None, Some(inputs)) => (Form::Columns, decode_columns(inputs.get(), signature)?),
        (Some(_), Some(_)) => {
            return Err(RequestError::Malformed(
                "give either \"instances\" or \"inputs\", not both".to_owned(),
            ));
        }
        (None, None) => {
            return Err(RequestError::Malformed(
                "expected \"instances\" (row form) or \"inputs\" (columnar form)".to_owned(),
            ));
        }
    };
    Ok(PredictRequest {
        form,
        inputs: signature.bind_inputs(named)?,
    })
}

fn first_char(text: &str) -> Option<char> {
    text.trim_start().chars().next()
}

/// Row-form instances, decoded as one stacked tensor per input.
pub(crate) fn decode_rows(
    instances: &str,
    signature: &Signature,
) -> Result<(Form, Vec<(String, Tensor)>), RequestError> {
    let Some(inside) = instances.trim_start().strip_prefix('[') else {
        return Err(RequestError::Malformed(
            "\"instances\" must be an array".to_owned(),
        ));
    };
    match first_char(inside) {
        Some(']') => Err(RequestError::Malformed("\"instances\" is empty".to_owned())),
        Some('{') => decode_keyed_rows(instances, signature),
        _ => {
            let [only] = signature.inputs.as_slice() else {
                return Err(RequestError::Malformed(format!(
                    "the model has {} inputs, so each instance must be an object keyed by input name",
                    signature.inputs.len()
                )));
            };
            let tensor = decode_column(only, &[instances], false)?;
            let form = Form::Rows {
                count: tensor.shape()[0],
            };
            Ok((form, vec![(only.name.clone(), tensor)]))
        }
    }
}

/// Instances that are objects keyed by input name: each field's value is one row of that input.
fn decode_keyed_rows(
    instances: &str,
    signature: &Signature,
) -> Result<(Form, Vec<(String, Tensor)>), RequestError> {
    let rows: Vec<BTreeMap<String, &RawValue>> =
        serde_json::from_str(instances).map_err(|err| {
            RequestError::Malformed(format!("every instance must be an object: {err}"))
        })?;
    let first = &rows[0];
    for (index, row) in rows.iter().enumerate().skip(1) {
        if row.len() != first.len() {
            return Err(RequestError::Malformed(format!(
                "instance {index} has {} fields, instance 0 has {}",
                row.len(),
                first.len()
            )));
        }
        if let Some(name) = row.keys().find(|name| !first.contains_key(*name)) {
            return Err(RequestError::Malformed(format!(
                "instance {index} has field '{name}', which instance 0 lacks"
            )));
        }
    }
    let columns = first.keys().map(|name| {
        let texts: Vec<&str> = rows.iter().map(|row| row[name].get()).collect();
        (name.clone(), texts)
    });
    let named = decode_named_columns(columns, signature)?;
    Ok((Form::Rows { count: rows.len() }, named))
}

/// Columns named after inputs, each cell one row of its input: how instances keyed by input
/// name bind, and MLflow's data frames (`/invocations`) with them.
pub(crate) fn decode_named_columns<S: AsRef<str>>(
    columns: impl IntoIterator<Item = (String, Vec<S>)>,
    signature: &Signature,
) -> Result<Vec<(String, Tensor)>, InputError> {
    columns
        .into_iter()
        .map(|(name, cells)| {
            let texts: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
            let tensor = decode_column(signature.input(&name)?, &texts, true)?;
            Ok((name, tensor))
        })
        .collect()
}

/// The columnar form: the single input's tensor, or an object of tensors keyed by input name.
pub(crate) fn decode_columns(
    inputs: &str,
    signature: &Signature,
) -> Result<Vec<(String, Tensor)>, RequestError> {
    if first_char(inputs) == Some('{') {
        let fields: BTreeMap<String, &RawValue> =
            serde_json::from_str(inputs).map_err(RequestError::malformed)?;
        return fields
            .into_iter()
            .map(|(name, text)| {
                let tensor = decode_column(signature.input(&name)?, &[text.get()], false)?;
                Ok((name, tensor))
            })
            .collect::<Result<_, InputError>>()
            .map_err(RequestError::from);
    }
    match signature.inputs.as_slice() {
        [only] => Ok(vec![(
            only.name.clone(),
            decode_column(only, &[inputs], false)?,
        )]),
        specs => Err(RequestError::Malformed(format!(
            "the model has {} inputs, so \"inputs\" must be an object keyed by input name",
            specs.len()
        ))),
    }
}

/// One input's tensor from JSON text: one whole tensor, or rows `stacked` along dimension 0.
pub(crate) fn decode_column(
    spec: &TensorSpec,
    texts: &[&str],
    stacked: bool,
) -> Result<Tensor, InputError> {
    let (shape, data) = json::decode_nested(spec.datatype, texts, stacked)
        .map_err(|err| InputError::bad_data(&spec.name, err))?;
    spec.check_shape(&shape)?;
    Tensor::new(shape, data).map_err(|err| InputError::bad_data(&spec.name, err))
}

/// The named outputs of one prediction, in the answer's order.
pub(crate) struct Outputs<'a> {
    pub(crate) names: Vec<&'a str>,
    /// For each output, a ZipMap's labels: its rows are written as `{label: probability}`.
    pub(crate) labels: Vec<Option<&'a ClassLabels>>,
    pub(crate) tensors: &'a [Tensor],
}

impl<'a> Outputs<'a> {
    /// Every output of the model, as the signature orders them.
    pub(crate) fn all(signature: &'a Signature, tensors: &'a [Tensor]) -> Outputs<'a> {
        Outputs {
            names: signature
                .outputs
                .iter()
                .map(|spec| spec.name.as_str())
                .collect(),
            labels: signature
                .outputs
                .iter()
                .map(|spec| spec.class_labels.as_ref())
                .collect(),
            tensors,
        }
    }

    pub(crate) fn each(
        &self,
    ) -> impl Iterator<Item = (&'a str, Option<&'a ClassLabels>, &'a Tensor)> + '_ {
        self.names
            .iter()
            .zip(&self.labels)
            .zip(self.tensors)
            .map(|((name, labels), tensor)| (*name, *labels, tensor))
    }
}

/// An output's values in the answer: nested arrays, or a ZipMap's rows as objects.
pub(crate) enum OutputJson<'a> {
    Nested(json::NestedJson<'a>),
    Row(LabeledRow<'a>),
    Rows(Vec<LabeledRow<'a>>),
}

impl OutputJson<'_> {
    /// A row of one value written as that value, as MLflow writes a data frame's cell.
    pub(crate) fn unwrap_single(self) -> Self {
        match self {
            OutputJson::Nested(mut nested) if nested.range.len() == 1 => {
                nested.shape = &[];
                OutputJson::Nested(nested)
            }
            other => other,
        }
    }
}

impl Serialize for OutputJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OutputJson::Nested(nested) => nested.serialize(serializer),
            OutputJson::Row(row) => row.serialize(serializer),
            OutputJson::Rows(rows) => rows.serialize(serializer),
        }
    }
}

/// A ZipMap output's labels, `[N, C]` probabilities and C.
fn zipmap<'a>(
    labels: Option<&'a ClassLabels>,
    tensor: &'a Tensor,
) -> Option<(&'a ClassLabels, &'a [f32], usize)> {
    match (labels, tensor.data(), tensor.shape()) {
        (Some(labels), TensorData::Fp32(values), &[_, classes]) if classes > 0 => {
            Some((labels, values, classes))
        }
        _ => None,
    }
}

/// Writes the answer in the request's form.
pub(crate) fn encode_response(form: Form, outputs: &Outputs<'_>) -> Result<Vec<u8>, RequestError> {
    let body = match form {
        Form::Rows { count } => {
            check_rows(outputs, count)?;
            serde_json::to_vec(&Predictions { outputs, count })
        }
        Form::Columns => serde_json::to_vec(&ColumnOutputs(outputs)),
    };
    Ok(body.expect("serialising to memory does not fail"))
}

pub(crate) fn check_rows(outputs: &Outputs<'_>, count: usize) -> Result<(), RequestError> {
    for (name, tensor) in outputs.names.iter().zip(outputs.tensors) {
        if tensor.shape().first() != Some(&count) {
            return Err(RequestError::UnsupportedForm(format!(
                "output '{name}' has shape {:?}, which does not split into {count} rows; \
                 use the columnar form {{\"inputs\": ...}}",
                tensor.shape()
            )));
        }
    }
    Ok(())
}

/// `{"predictions": [row, ...]}`.
struct Predictions<'a> {
    outputs: &'a Outputs<'a>,
    count: usize,
}

impl Serialize for Predictions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<Row<'_>> = (0..self.count)
            .map(|index| Row {
                outputs: self.outputs,
                index,
            })
            .collect();
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("predictions", &rows)?;
        map.end()
    }
}

struct Row<'a> {
    outputs: &'a Outputs<'a>,
    index: usize,
}

pub(crate) fn row_of(tensor: &Tensor, index: usize) -> json::NestedJson<'_> {
    let shape = &tensor.shape()[1..];
    let stride: usize = shape.iter().product();
    json::NestedJson {
        data: tensor.data(),
        shape,
        range: index * stride..(index + 1) * stride,
    }
}

/// Row `index` of an output as the answer writes it: a ZipMap's as `{label: probability}`.
pub(crate) fn answer_row<'a>(
    labels: Option<&'a ClassLabels>,
    tensor: &'a Tensor,
    index: usize,
) -> OutputJson<'a> {
    match zipmap(labels, tensor) {
        Some((labels, values, classes)) => OutputJson::Row(LabeledRow {
            labels,
            values: &values[index * classes..(index + 1) * classes],
        }),
        None => OutputJson::Nested(row_of(tensor, index)),
    }
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let ([tensor], [labels]) = (self.outputs.tensors, self.outputs.labels.as_slice()) {
            return answer_row(*labels, tensor, self.index).serialize(serializer);
        }
        let mut map = serializer.serialize_map(Some(self.outputs.tensors.len()))?;
        for (name, labels, tensor) in self.outputs.each() {
            map.serialize_entry(name, &answer_row(labels, tensor, self.index))?;
        }
        map.end()
    }
}

/// `{"outputs": tensor}` or `{"outputs": {name: tensor, ...}}`.
struct ColumnOutputs<'a>(&'a Outputs<'a>);

pub(crate) fn whole(tensor: &Tensor) -> json::NestedJson<'_> {
    json::NestedJson {
        data: tensor.data(),
        shape: tensor.shape(),
        range: 0..tensor.data().len(),
    }
}

/// A whole output as the answer writes it: a ZipMap's as a list of `{label: probability}`.
pub(crate) fn answer_whole<'a>(
    labels: Option<&'a ClassLabels>,
    tensor: &'a Tensor,
) -> OutputJson<'a> {
    match zipmap(labels, tensor) {
        Some((labels, values, classes)) => OutputJson::Rows(
            values
                .chunks(classes)
                .map(|values| LabeledRow { labels, values })
                .collect(),
        ),
        None => OutputJson::Nested(whole(tensor)),
    }
}

impl Serialize for ColumnOutputs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Named<'a>(&'a Outputs<'a>);
        impl Serialize for Named<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.tensors.len()))?;
                for (name, labels, tensor) in self.0.each() {
                    map.serialize_entry(name, &answer_whole(labels, tensor))?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        match (self.0.tensors, self.0.labels.as_slice()) {
            ([tensor], [labels]) => {
                map.serialize_entry("outputs", &answer_whole(*labels, tensor))?
            }
            _ => map.serialize_entry("outputs", &Named(self.0))?,
        }
        map.end()
    }
}

#[cfg(test)]
mod value_reference;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::model::{
        DataType, TensorData,
        signature::examples::{batch, matrix, one_input, two_inputs},
    };

    fn single_input() -> Signature {
        one_input("x", 2, vec![matrix("y", DataType::Fp32, 1)])
    }

    fn decode(body: &str, signature: &Signature) -> Result<PredictRequest, String> {
        decode_request(body.as_bytes(), signature).map_err(|e| e.to_string())
    }

    #[test]
    fn single_input_rows_stack_into_a_batch() {
        let request = decode(
            r#"{"instances": [[1, 2], [3, 4], [5, 6]]}"#,
            &single_input(),
        )
        .unwrap();
        assert_eq!(request.form, Form::Rows { count: 3 });
        assert_eq!(request.inputs[0].shape(), &[3, 2]);
        let keyed = decode(r#"{"instances": [{"x": [1, 2]}]}"#, &single_input()).unwrap();
        assert_eq!(keyed.inputs[0].shape(), &[1, 2]);
    }

    #[test]
    fn keyed_rows_feed_several_inputs() {
        let request = decode(
            r#"{"instances": [{"plan": ["basic"], "tenure": [3]}, {"tenure": [9], "plan": ["premium"]}]}"#,
            &two_inputs(),
        )
        .unwrap();
        assert_eq!(
            request.inputs[0].data(),
            &TensorData::Bytes(vec!["basic".into(), "premium".into()])
        );
        assert_eq!(request.inputs[1].data(), &TensorData::Fp32(vec![3.0, 9.0]));
    }

    #[test]
    fn columnar_inputs_are_whole_tensors() {
        let request = decode(
            r#"{"inputs": {"plan": [["a"]], "tenure": [[1.5]]}}"#,
            &two_inputs(),
        )
        .unwrap();
        assert_eq!(request.form, Form::Columns);
        let single = decode(r#"{"inputs": [[1, 2]]}"#, &single_input()).unwrap();
        assert_eq!(single.inputs[0].shape(), &[1, 2]);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let sig = two_inputs();
        assert!(
            decode(r#"{"instances": []}"#, &sig)
                .unwrap_err()
                .contains("empty")
        );
        assert!(decode(r#"[1]"#, &sig).unwrap_err().contains("JSON object"));
        assert!(decode(r#"{}"#, &sig).unwrap_err().contains("\"instances\""));
        assert!(
            decode(r#"{"instances": [[1]]}"#, &sig)
                .unwrap_err()
                .contains("object keyed by input name")
        );
        assert!(
            decode(
                r#"{"instances": [{"plan": ["a"], "tenure": [1]}, {"plan": ["a"]}]}"#,
                &sig
            )
            .unwrap_err()
            .contains("instance 1 has 1 fields")
        );
        assert!(
            decode(r#"{"instances": [{"plan": ["a"], "tenure": ["x"]}]}"#, &sig)
                .unwrap_err()
                .contains("input 'tenure'")
        );
        assert!(
            decode(r#"{"instances": [[1, 2], [3]]}"#, &single_input())
                .unwrap_err()
                .contains("ragged")
        );
        assert!(
            decode(r#"{"instances": [{"age": [1]}]}"#, &sig)
                .unwrap_err()
                .contains("unknown input 'age'")
        );
    }

    fn outputs_of<'a>(names: Vec<&'a str>, tensors: &'a [Tensor]) -> Outputs<'a> {
        let labels = vec![None; names.len()];
        Outputs {
            names,
            labels,
            tensors,
        }
    }

    #[test]
    fn rows_answer_one_prediction_per_instance() {
        let tensors = [
            Tensor::new(vec![2], TensorData::Int64(vec![1, 0])).unwrap(),
            Tensor::new(vec![2, 2], TensorData::Fp32(vec![0.25, 0.75, 0.5, 0.5])).unwrap(),
        ];
        let body = encode_response(
            Form::Rows { count: 2 },
            &outputs_of(vec!["label", "probabilities"], &tensors),
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"predictions": [
                {"label": 1, "probabilities": [0.25, 0.75]},
                {"label": 0, "probabilities": [0.5, 0.5]}]})
        );
        let single = encode_response(
            Form::Rows { count: 2 },
            &outputs_of(vec!["label"], &tensors[..1]),
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&single).unwrap(),
            serde_json::json!({"predictions": [1, 0]})
        );
    }

    #[test]
    fn columns_answer_whole_tensors() {
        let tensors = [Tensor::new(vec![1, 2], TensorData::Fp32(vec![0.25, 0.75])).unwrap()];
        let body = encode_response(Form::Columns, &outputs_of(vec!["p"], &tensors)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            serde_json::json!({"outputs": [[0.25, 0.75]]})
        );
    }

    #[test]
    fn zipmap_rows_are_objects_keyed_by_label_in_both_forms() {
        let tensors = [
            Tensor::new(vec![2], TensorData::Int64(vec![1, 0])).unwrap(),
            Tensor::new(vec![2, 2], TensorData::Fp32(vec![0.25, 0.75, 0.5, 0.5])).unwrap(),
        ];
        let labels = ClassLabels::Int64(vec![0, 1]);
        let outputs = Outputs {
            labels: vec![None, Some(&labels)],
            ..outputs_of(vec!["label", "probabilities"], &tensors)
        };
        let rows = encode_response(Form::Rows { count: 2 }, &outputs).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&rows).unwrap(),
            serde_json::json!({"predictions": [
                {"label": 1, "probabilities": {"0": 0.25, "1": 0.75}},
                {"label": 0, "probabilities": {"0": 0.5, "1": 0.5}}]})
        );
        let columns = encode_response(Form::Columns, &outputs).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&columns).unwrap()["outputs"]["probabilities"],
            serde_json::json!([{"0": 0.25, "1": 0.75}, {"0": 0.5, "1": 0.5}])
        );
        let only = Outputs {
            labels: vec![Some(&labels)],
            ..outputs_of(vec!["probabilities"], &tensors[1..])
        };
        let single = encode_response(Form::Rows { count: 2 }, &only).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&single).unwrap()["predictions"][1],
            serde_json::json!({"0": 0.5, "1": 0.5})
        );
    }

    #[test]
    fn outputs_without_a_batch_dimension_cannot_be_rows() {
        let tensors = [Tensor::new(vec![], TensorData::Fp32(vec![1.0])).unwrap()];
        let err = encode_response(
            Form::Rows { count: 2 },
            &outputs_of(vec!["total"], &tensors),
        )
        .unwrap_err();
        assert!(err.to_string().contains("columnar form"));
    }

    /// JSON values of every kind, arrays and objects nested a few levels, with the names the
    /// test signatures use as keys.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            4 => (-1000i64..1000).prop_map(Value::from),
            4 => (-1e6f64..1e6).prop_map(Value::from),
            1 => Just(Value::from(1e39)),
            1 => Just(Value::from(u64::MAX)),
            1 => "[a-z]{0,3}".prop_map(Value::from),
            1 => any::<bool>().prop_map(Value::from),
            1 => Just(Value::Null),
        ];
        let key = prop_oneof![Just("x"), Just("plan"), Just("tenure"), Just("age")];
        leaf.prop_recursive(4, 48, 4, move |inner| {
            prop_oneof![
                4 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                1 => prop::collection::btree_map(key.clone().prop_map(str::to_owned), inner, 0..3)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A regular tensor of numbers or strings: the values that decode successfully.
    fn regular_json() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            (-1000i64..1000).prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
        ];
        (prop::collection::vec(0usize..4, 0..4), scalar).prop_map(|(shape, scalar)| {
            shape
                .iter()
                .rev()
                .fold(scalar, |inner, &length| Value::Array(vec![inner; length]))
        })
    }

    /// A request body of either form, single-input or keyed by input name.
    fn any_body() -> impl Strategy<Value = Value> {
        let value = prop_oneof![any_json(), regular_json()];
        let fitting_row = ("[a-z]{0,3}", -1e6f64..1e6)
            .prop_map(|(plan, tenure)| serde_json::json!({"plan": [plan], "tenure": [tenure]}));
        let regular_row = (regular_json(), regular_json())
            .prop_map(|(plan, tenure)| serde_json::json!({"plan": plan, "tenure": tenure}));
        let keyed_row = prop_oneof![3 => fitting_row, 1 => regular_row, 1 => any_json()];
        prop_oneof![
            value
                .clone()
                .prop_map(|v| serde_json::json!({"instances": v})),
            value.prop_map(|v| serde_json::json!({"inputs": v})),
            prop::collection::vec(keyed_row.clone(), 0..4)
                .prop_map(|rows| serde_json::json!({"instances": rows})),
            prop::collection::btree_map(Just("plan".to_owned()), regular_json(), 1)
                .prop_map(|map| serde_json::json!({"inputs": map})),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decodes_as_the_value_tree_did(body in any_body()) {
            let body = serde_json::to_vec(&body).unwrap();
            let scalar_rows = Signature {
                inputs: vec![TensorSpec::new("x", DataType::Fp32, vec![batch()])],
                outputs: Vec::new(),
            };
            for signature in [single_input(), two_inputs(), scalar_rows] {
                let decoded = decode_request(&body, &signature)
                    .ok()
                    .map(|request| (request.form, request.inputs));
                let reference = value_reference::decode(&body, &signature);
                prop_assert_eq!(decoded, reference, "{}", String::from_utf8_lossy(&body));
            }
        }
    }
}
