//! `/predict` and `/v1/models/{name}:predict`: the TF Serving / KServe V1 form.
//!
//! Row form, `{"instances": [...]}`: one entry per example. For a single-input model an entry
//! is that input's row; otherwise it is an object keyed by input name. The answer is
//! `{"predictions": [...]}`, one entry per example (an object keyed by output name when the
//! model has several outputs).
//!
//! Columnar form, `{"inputs": ...}`: the input's whole tensor (or an object of them) answered
//! by `{"outputs": ...}` in the same shape.

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::Value;

use super::{RequestError, json};
use crate::model::{InputError, Signature, Tensor, TensorSpec, tensor::element_count};

/// Which of the two forms a request used; the answer uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Rows { count: usize },
    Columns,
}

#[derive(Debug)]
pub struct PredictRequest {
    pub form: Form,
    /// Inputs bound in signature order.
    pub inputs: Vec<Tensor>,
}

pub fn decode_request(body: &[u8], signature: &Signature) -> Result<PredictRequest, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(RequestError::malformed)?;
    let Value::Object(mut object) = value else {
        return Err(RequestError::Malformed(
            "expected a JSON object with \"instances\" or \"inputs\"".to_owned(),
        ));
    };
    let (form, columns) = match (object.remove("instances"), object.remove("inputs")) {
        (Some(instances), None) => rows_to_columns(instances, signature)?,
        (None, Some(inputs)) => (Form::Columns, split_columns(inputs, signature)?),
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
    let named = columns
        .into_iter()
        .map(|(name, column)| {
            let tensor = decode_column(signature.input(&name)?, &column)?;
            Ok((name, tensor))
        })
        .collect::<Result<Vec<_>, InputError>>()?;
    Ok(PredictRequest {
        form,
        inputs: signature.bind_inputs(named)?,
    })
}

/// Regroups row-form instances as one stacked column per input.
fn rows_to_columns(
    instances: Value,
    signature: &Signature,
) -> Result<(Form, Vec<(String, Value)>), RequestError> {
    let Value::Array(rows) = instances else {
        return Err(RequestError::Malformed(
            "\"instances\" must be an array".to_owned(),
        ));
    };
    if rows.is_empty() {
        return Err(RequestError::Malformed("\"instances\" is empty".to_owned()));
    }
    let form = Form::Rows { count: rows.len() };
    let keyed = rows.iter().any(Value::is_object);
    if !keyed {
        let [only] = signature.inputs.as_slice() else {
            return Err(RequestError::Malformed(format!(
                "the model has {} inputs, so each instance must be an object keyed by input name",
                signature.inputs.len()
            )));
        };
        return Ok((form, vec![(only.name.clone(), Value::Array(rows))]));
    }
    let mut columns: Vec<(String, Vec<Value>)> = Vec::new();
    for (index, row) in rows.into_iter().enumerate() {
        let Value::Object(fields) = row else {
            return Err(RequestError::Malformed(format!(
                "instance {index} is not an object, unlike the others"
            )));
        };
        if index > 0 && fields.len() != columns.len() {
            return Err(RequestError::Malformed(format!(
                "instance {index} has {} fields, instance 0 has {}",
                fields.len(),
                columns.len()
            )));
        }
        for (name, value) in fields {
            match columns.iter_mut().find(|(column, _)| *column == name) {
                Some((_, values)) => values.push(value),
                None if index == 0 => columns.push((name, vec![value])),
                None => {
                    return Err(RequestError::Malformed(format!(
                        "instance {index} has field '{name}', which instance 0 lacks"
                    )));
                }
            }
        }
    }
    let columns = columns
        .into_iter()
        .map(|(name, values)| (name, Value::Array(values)))
        .collect();
    Ok((form, columns))
}

fn split_columns(
    inputs: Value,
    signature: &Signature,
) -> Result<Vec<(String, Value)>, RequestError> {
    match (inputs, signature.inputs.as_slice()) {
        (Value::Object(fields), _) => Ok(fields.into_iter().collect()),
        (value, [only]) => Ok(vec![(only.name.clone(), value)]),
        (_, specs) => Err(RequestError::Malformed(format!(
            "the model has {} inputs, so \"inputs\" must be an object keyed by input name",
            specs.len()
        ))),
    }
}

fn decode_column(spec: &TensorSpec, column: &Value) -> Result<Tensor, InputError> {
    let shape = nested_shape(column).map_err(|reason| InputError::bad_data(&spec.name, reason))?;
    spec.check_shape(&shape)?;
    let expected_len = element_count(&shape)
        .ok_or_else(|| InputError::bad_data(&spec.name, format!("shape {shape:?} is too large")))?;
    let data = json::decode(spec.datatype, column, expected_len)
        .map_err(|err| InputError::bad_data(&spec.name, err))?;
    Tensor::new(shape, data).map_err(|err| InputError::bad_data(&spec.name, err))
}

/// The shape of nested JSON arrays; ragged nesting is an error.
fn nested_shape(value: &Value) -> Result<Vec<usize>, String> {
    let Value::Array(items) = value else {
        return Ok(Vec::new());
    };
    let Some(first) = items.first() else {
        return Ok(vec![0]);
    };
    let inner = nested_shape(first)?;
    for (index, item) in items.iter().enumerate().skip(1) {
        let other = nested_shape(item)?;
        if other != inner {
            return Err(format!(
                "ragged nested arrays: element {index} has shape {other:?}, element 0 has {inner:?}"
            ));
        }
    }
    Ok(std::iter::once(items.len()).chain(inner).collect())
}

/// The named outputs of one prediction, in the answer's order.
pub struct Outputs<'a> {
    pub names: Vec<&'a str>,
    pub tensors: &'a [Tensor],
}

/// Writes the answer in the request's form.
pub fn encode_response(form: Form, outputs: &Outputs<'_>) -> Result<Vec<u8>, RequestError> {
    let body = match form {
        Form::Rows { count } => {
            check_rows(outputs, count)?;
            serde_json::to_vec(&Predictions { outputs, count })
        }
        Form::Columns => serde_json::to_vec(&ColumnOutputs(outputs)),
    };
    Ok(body.expect("serialising to memory does not fail"))
}

fn check_rows(outputs: &Outputs<'_>, count: usize) -> Result<(), RequestError> {
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

fn row_of(tensor: &Tensor, index: usize) -> json::NestedJson<'_> {
    let shape = &tensor.shape()[1..];
    let stride: usize = shape.iter().product();
    json::NestedJson {
        data: tensor.data(),
        shape,
        range: index * stride..(index + 1) * stride,
    }
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let [tensor] = self.outputs.tensors {
            return row_of(tensor, self.index).serialize(serializer);
        }
        let mut map = serializer.serialize_map(Some(self.outputs.tensors.len()))?;
        for (name, tensor) in self.outputs.names.iter().zip(self.outputs.tensors) {
            map.serialize_entry(name, &row_of(tensor, self.index))?;
        }
        map.end()
    }
}

/// `{"outputs": tensor}` or `{"outputs": {name: tensor, ...}}`.
struct ColumnOutputs<'a>(&'a Outputs<'a>);

fn whole(tensor: &Tensor) -> json::NestedJson<'_> {
    json::NestedJson {
        data: tensor.data(),
        shape: tensor.shape(),
        range: 0..tensor.data().len(),
    }
}

impl Serialize for ColumnOutputs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Named<'a>(&'a Outputs<'a>);
        impl Serialize for Named<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.tensors.len()))?;
                for (name, tensor) in self.0.names.iter().zip(self.0.tensors) {
                    map.serialize_entry(name, &whole(tensor))?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        match self.0.tensors {
            [tensor] => map.serialize_entry("outputs", &whole(tensor))?,
            _ => map.serialize_entry("outputs", &Named(self.0))?,
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        DataType, Dim, TensorData,
        signature::examples::{batch, two_inputs},
    };

    fn single_input() -> Signature {
        Signature {
            inputs: vec![TensorSpec::new(
                "x",
                DataType::Fp32,
                vec![batch(), Dim::Fixed(2)],
            )],
            outputs: vec![TensorSpec::new(
                "y",
                DataType::Fp32,
                vec![batch(), Dim::Fixed(1)],
            )],
        }
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
        Outputs { names, tensors }
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
    fn outputs_without_a_batch_dimension_cannot_be_rows() {
        let tensors = [Tensor::new(vec![], TensorData::Fp32(vec![1.0])).unwrap()];
        let err = encode_response(
            Form::Rows { count: 2 },
            &outputs_of(vec!["total"], &tensors),
        )
        .unwrap_err();
        assert!(err.to_string().contains("columnar form"));
    }
}
