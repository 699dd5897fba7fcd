//! MLflow's scoring protocol: what `mlflow models serve` takes on `/invocations` and how its
//! ONNX flavor answers, so that MLflow clients can switch to pinserve unchanged.
//!
//! A JSON body holds exactly one of `dataframe_split`, `dataframe_records`, `instances` or
//! `inputs`, and optionally `params`; a `text/csv` body is a data frame with a header row.
//! Tensor forms (`instances`, `inputs`) decode as `/predict`'s do and are answered as MLflow's
//! pyfunc answers a feed dict: `{"predictions": {output: tensor, ...}}`. Data frames are
//! answered as MLflow answers a DataFrame: one record per row, `{"predictions": [{output:
//! value, ...}, ...]}`, a row of one element written as that element; for a model whose MLflow
//! signature is tensor-based, as a feed dict (see [`answer_form`]).
//!
//! Columns bind to inputs by name, as `/predict`'s keyed instances do. A frame whose columns
//! do not all name inputs is, for a single-input model, that input's features in column order
//! (MLflow feeds `DataFrame.values` to a single-input ONNX model).

use std::{borrow::Cow, collections::BTreeSet, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap,
};
use serde_json::value::RawValue;

use super::{
    RequestError,
    predict::{self, Outputs},
};
use crate::model::{DataType, Dim, InputError, Signature, Tensor, TensorSpec};

/// How MLflow's ONNX pyfunc shapes the answer: by what the request decoded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// A data frame: one record per row.
    Frame { rows: usize },
    /// A feed dict (`instances`, `inputs`): one whole tensor per output.
    Tensors,
}

#[derive(Debug)]
pub(crate) struct ScoringRequest {
    pub(crate) form: Form,
    /// Inputs bound in signature order.
    pub(crate) inputs: Vec<Tensor>,
    /// Whether the request carried `params`, which an ONNX model has no schema for: MLflow
    /// ignores them (with a warning), and so does pinserve.
    pub(crate) ignored_params: bool,
}

const FORMATS: &str = "'dataframe_split', 'dataframe_records', 'instances' or 'inputs'";

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(borrow, default)]
    dataframe_split: Option<&'a RawValue>,
    #[serde(borrow, default)]
    dataframe_records: Option<&'a RawValue>,
    #[serde(borrow, default)]
    instances: Option<&'a RawValue>,
    #[serde(borrow, default)]
    inputs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// Decodes an `application/json` body (also the form of MLflow's `serving_input_example.json`).
pub(crate) fn decode_json(
    body: &[u8],
    signature: &Signature,
) -> Result<ScoringRequest, RequestError> {
    let text = std::str::from_utf8(body).map_err(RequestError::malformed)?;
    if !text.trim_start().starts_with('{') {
        return Err(RequestError::Malformed(format!(
            "expected a JSON object with exactly one of {FORMATS}"
        )));
    }
    let wire: WireRequest = serde_json::from_str(text).map_err(RequestError::malformed)?;
    let ignored_params = wire.params.is_some_and(|params| params.get() != "null");
    let (form, named) = match wire.formats()? {
        ("dataframe_split", value) => frame_request(Frame::from_split(value.get())?, signature)?,
        ("dataframe_records", value) => {
            frame_request(Frame::from_records(value.get())?, signature)?
        }
        ("instances", value) => (
            Form::Tensors,
            predict::decode_rows(value.get(), signature)?.1,
        ),
        (_, value) => (
            Form::Tensors,
            predict::decode_columns(value.get(), signature)?,
        ),
    };
    Ok(ScoringRequest {
        form,
        inputs: signature.bind_inputs(named)?,
        ignored_params,
    })
}

impl<'a> WireRequest<'a> {
    /// The one data field the body must have, as MLflow requires.
    fn formats(&self) -> Result<(&'static str, &'a RawValue), RequestError> {
        let given: Vec<(&'static str, &'a RawValue)> = [
            ("dataframe_split", self.dataframe_split),
            ("dataframe_records", self.dataframe_records),
            ("instances", self.instances),
            ("inputs", self.inputs),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name, value)))
        .collect();
        match given.as_slice() {
            [only] => Ok(*only),
            _ => Err(RequestError::Malformed(format!(
                "the body must have exactly one of {FORMATS}; it has {}",
                given.len()
            ))),
        }
    }
}

/// Decodes a `text/csv` body: a header row of column names, then one line per row.
pub(crate) fn decode_csv(
    body: &[u8],
    signature: &Signature,
) -> Result<ScoringRequest, RequestError> {
    let frame = Frame::from_csv(body, signature)?;
    let (form, named) = frame_request(frame, signature)?;
    Ok(ScoringRequest {
        form,
        inputs: signature.bind_inputs(named)?,
        ignored_params: false,
    })
}

/// A data frame, column by column; each cell is the JSON text of one row's value.
struct Frame<'a> {
    columns: Vec<(String, Vec<Cow<'a, str>>)>,
    rows: usize,
}

#[derive(Deserialize)]
struct Split<'a> {
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(borrow)]
    data: Vec<Vec<&'a RawValue>>,
}

impl<'a> Frame<'a> {
    /// pandas' `split` orient; without `columns`, the columns are named `0`, `1`, ...
    fn from_split(text: &'a str) -> Result<Frame<'a>, RequestError> {
        let split: Split<'a> = serde_json::from_str(text).map_err(|err| {
            RequestError::Malformed(format!("\"dataframe_split\" is not a data frame: {err}"))
        })?;
        let width = split.data.first().map_or(0, Vec::len);
        let names = split
            .columns
            .unwrap_or_else(|| (0..width).map(|index| index.to_string()).collect());
        if let Some(index) = split.data.iter().position(|row| row.len() != names.len()) {
            return Err(RequestError::Malformed(format!(
                "\"dataframe_split\" row {index} has {} values for {} columns",
                split.data[index].len(),
                names.len()
            )));
        }
        let columns = names
            .into_iter()
            .enumerate()
            .map(|(at, name)| {
                let cells = split.data.iter().map(|row| Cow::Borrowed(row[at].get()));
                (name, cells.collect())
            })
            .collect();
        Frame::new(columns, split.data.len())
    }

    /// pandas' `records` orient: every record has the same fields, in the first one's order.
    fn from_records(text: &'a str) -> Result<Frame<'a>, RequestError> {
        let records: Vec<Record<'a>> = serde_json::from_str(text).map_err(|err| {
            RequestError::Malformed(format!(
                "\"dataframe_records\" must be a list of objects: {err}"
            ))
        })?;
        let Some(first) = records.first() else {
            return Frame::new(Vec::new(), 0);
        };
        let mut columns: Vec<(String, Vec<Cow<'a, str>>)> = first
            .0
            .iter()
            .map(|(name, _)| (name.clone(), Vec::with_capacity(records.len())))
            .collect();
        for (index, record) in records.iter().enumerate() {
            let fits = record.0.len() == columns.len()
                && record.0.iter().zip(&columns).all(|((a, _), (b, _))| a == b);
            if !fits {
                return Err(RequestError::Malformed(format!(
                    "record {index} does not have the fields of record 0 ({}), in that order",
                    quoted(columns.iter().map(|(name, _)| name.as_str()))
                )));
            }
            for ((_, cell), (_, cells)) in record.0.iter().zip(&mut columns) {
                cells.push(Cow::Borrowed(cell.get()));
            }
        }
        Frame::new(columns, records.len())
    }

    fn new(
        columns: Vec<(String, Vec<Cow<'a, str>>)>,
        rows: usize,
    ) -> Result<Frame<'a>, RequestError> {
        if rows == 0 || columns.is_empty() {
            return Err(RequestError::Malformed(
                "the data frame is empty".to_owned(),
            ));
        }
        let mut seen = BTreeSet::new();
        if let Some((name, _)) = columns.iter().find(|(name, _)| !seen.insert(name.as_str())) {
            return Err(RequestError::Malformed(format!(
                "column '{name}' appears twice"
            )));
        }
        Ok(Frame { columns, rows })
    }
}

impl Frame<'static> {
    fn from_csv(body: &[u8], signature: &Signature) -> Result<Frame<'static>, RequestError> {
        let mut reader = csv::Reader::from_reader(body);
        let names: Vec<String> = reader
            .headers()
            .map_err(|err| RequestError::Malformed(format!("CSV header: {err}")))?
            .iter()
            .map(str::to_owned)
            .collect();
        let binding = Binding::of(&names, signature)?;
        let specs: Vec<&TensorSpec> = names
            .iter()
            .map(|name| binding.spec(name, signature))
            .collect::<Result<_, _>>()?;
        let mut columns: Vec<(String, Vec<Cow<'static, str>>)> =
            names.into_iter().map(|name| (name, Vec::new())).collect();
        let mut rows = 0;
        for record in reader.records() {
            let record = record.map_err(|err| RequestError::Malformed(format!("CSV: {err}")))?;
            for ((cell, spec), (name, cells)) in record.iter().zip(&specs).zip(&mut columns) {
                let json = csv_cell_json(cell, spec.datatype).map_err(|reason| {
                    RequestError::Malformed(format!("CSV row {rows}, column '{name}': {reason}"))
                })?;
                cells.push(Cow::Owned(json));
            }
            rows += 1;
        }
        Frame::new(columns, rows)
    }
}

/// A CSV cell as the JSON value the column's input decodes: text has no types, the model
/// does (MLflow leaves that guess to pandas).
fn csv_cell_json(cell: &str, datatype: DataType) -> Result<String, String> {
    let not_a = |kind: &str| format!("'{cell}' is not {kind}");
    let trimmed = cell.trim();
    match datatype {
        DataType::Bytes => Ok(serde_json::Value::from(cell).to_string()),
        DataType::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok("true".to_owned()),
            "false" | "0" => Ok("false".to_owned()),
            _ => Err(not_a("a boolean")),
        },
        _ => {
            if let Ok(integer) = trimmed.parse::<i64>() {
                return Ok(integer.to_string());
            }
            match trimmed.parse::<f64>() {
                Ok(number) if number.is_finite() => Ok(serde_json::Value::from(number).to_string()),
                _ => Err(not_a("a finite number")),
            }
        }
    }
}

/// How a frame's columns become inputs.
enum Binding<'s> {
    /// Every column names an input.
    ByName,
    /// The columns are the features of the model's only input, in order.
    Features(&'s TensorSpec),
}

impl<'s> Binding<'s> {
    fn of(names: &[String], signature: &'s Signature) -> Result<Binding<'s>, InputError> {
        if let Some(unknown) = names.iter().find(|name| signature.input(name).is_err()) {
            return match signature.inputs.as_slice() {
                [only] => Ok(Binding::Features(only)),
                _ => Err(signature.input(unknown).unwrap_err()),
            };
        }
        Ok(Binding::ByName)
    }

    fn spec(&self, name: &str, signature: &'s Signature) -> Result<&'s TensorSpec, InputError> {
        match self {
            Binding::ByName => signature.input(name),
            Binding::Features(only) => Ok(only),
        }
    }
}

/// Binds a frame's columns to inputs, reshaping plain cells to the model's `[rows, 1]` inputs
/// (a frame holds one scalar per cell where such a model wants a one-element row).
fn frame_request(
    frame: Frame<'_>,
    signature: &Signature,
) -> Result<(Form, Vec<(String, Tensor)>), RequestError> {
    let names: Vec<String> = frame.columns.iter().map(|(name, _)| name.clone()).collect();
    let form = Form::Frame { rows: frame.rows };
    let named = match Binding::of(&names, signature)? {
        Binding::ByName => {
            let columns = frame
                .columns
                .into_iter()
                .map(|(name, cells)| {
                    let cells = one_per_row(signature.input(&name)?, cells);
                    Ok((name, cells))
                })
                .collect::<Result<Vec<_>, InputError>>()?;
            predict::decode_named_columns(columns, signature)?
        }
        Binding::Features(only) => vec![(only.name.clone(), features(&frame, only)?)],
    };
    Ok((form, named))
}

/// Plain cells as one-element rows when `spec` is `[rows, 1]`; other cells as they are.
fn one_per_row<'a>(spec: &TensorSpec, cells: Vec<Cow<'a, str>>) -> Vec<Cow<'a, str>> {
    if !wants_one_per_row(spec) || !cells.iter().all(|cell| is_scalar(cell)) {
        return cells;
    }
    cells
        .iter()
        .map(|cell| Cow::Owned(format!("[{cell}]")))
        .collect()
}

fn wants_one_per_row(spec: &TensorSpec) -> bool {
    matches!(spec.dims.as_slice(), [_, Dim::Fixed(1) | Dim::Dynamic(_)])
}

fn is_scalar(cell: &str) -> bool {
    !cell.trim_start().starts_with('[')
}

/// The single input's tensor from every column of the frame: `[rows, columns]` (or `[rows]`
/// for one column and an input of rank 1).
fn features(frame: &Frame<'_>, spec: &TensorSpec) -> Result<Tensor, InputError> {
    let rows: Vec<String> = (0..frame.rows)
        .map(|row| {
            let cells: Vec<&str> = frame.columns.iter().map(|(_, c)| c[row].as_ref()).collect();
            match (cells.as_slice(), spec.dims.len()) {
                ([only], 1) => (*only).to_owned(),
                _ => format!("[{}]", cells.join(",")),
            }
        })
        .collect();
    let texts: Vec<&str> = rows.iter().map(String::as_str).collect();
    predict::decode_column(spec, &texts, true)
}

/// One record of `dataframe_records`, its fields in the order the client wrote them: for a
/// single-input model that order is the order of the features.
struct Record<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Record<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = Record<'a>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<'a>, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<String, &'a RawValue>()? {
                    fields.push(field);
                }
                Ok(Record(fields))
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

fn quoted<'n>(names: impl Iterator<Item = &'n str>) -> String {
    names
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The form MLflow answers in for the served model: it enforces a tensor-based signature by
/// turning a data frame into a feed dict, which its ONNX flavor answers as it answers
/// `inputs`; without a signature (or with a column-based one) the frame reaches the model and
/// the answer is one record per row.
pub(crate) fn answer_form(form: Form, mlflow_signature: Option<&serde_json::Value>) -> Form {
    let tensor_based = mlflow_signature
        .and_then(|signature| signature["inputs"].as_array())
        .is_some_and(|inputs| inputs.iter().any(|input| input["type"] == "tensor"));
    if tensor_based { Form::Tensors } else { form }
}

/// Writes MLflow's answer for the request's form.
pub(crate) fn encode_response(form: Form, outputs: &Outputs<'_>) -> Result<Vec<u8>, RequestError> {
    if let Form::Frame { rows } = form {
        predict::check_rows(outputs, rows)?;
    }
    let body = serde_json::to_vec(&Predictions { form, outputs });
    Ok(body.expect("serialising to memory does not fail"))
}

/// `{"predictions": [record, ...]}` or `{"predictions": {output: tensor, ...}}`.
struct Predictions<'a> {
    form: Form,
    outputs: &'a Outputs<'a>,
}

impl Serialize for Predictions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match self.form {
            Form::Frame { rows } => {
                let records: Vec<Named<'_>> = (0..rows)
                    .map(|row| Named {
                        outputs: self.outputs,
                        row: Some(row),
                    })
                    .collect();
                map.serialize_entry("predictions", &records)?;
            }
            Form::Tensors => map.serialize_entry(
                "predictions",
                &Named {
                    outputs: self.outputs,
                    row: None,
                },
            )?,
        }
        map.end()
    }
}

/// Every output by name: one row of each (a one-element row as its element), or whole tensors;
/// a ZipMap output's rows as `{label: probability}`, as MLflow's ONNX flavor answers them.
struct Named<'a> {
    outputs: &'a Outputs<'a>,
    row: Option<usize>,
}

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.outputs.tensors.len()))?;
        for (name, labels, tensor) in self.outputs.each() {
            let value = match self.row {
                Some(row) => predict::answer_row(labels, tensor, row).unwrap_single(),
                None => predict::answer_whole(labels, tensor),
            };
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::model::{
        TensorData,
        signature::examples::{column, one_input, two_inputs},
    };

    fn features() -> Signature {
        one_input("x", 3, vec![column("y", DataType::Fp32)])
    }

    fn decode(body: Value, signature: &Signature) -> Result<ScoringRequest, String> {
        decode_json(body.to_string().as_bytes(), signature).map_err(|err| err.to_string())
    }

    #[test]
    fn frame_columns_bind_by_name_and_plain_cells_fill_one_element_rows() {
        let split = json!({"dataframe_split": {"columns": ["tenure", "plan"], "index": [7, 8],
            "data": [[3, "basic"], [9.5, "premium"]]}});
        let request = decode(split, &two_inputs()).unwrap();
        assert_eq!(request.form, Form::Frame { rows: 2 });
        assert_eq!(request.inputs[0].shape(), &[2, 1]);
        assert_eq!(request.inputs[1].data(), &TensorData::Fp32(vec![3.0, 9.5]));
        let records = json!({"dataframe_records": [{"plan": "basic", "tenure": 3}],
            "params": {"temperature": 0.5}});
        let request = decode(records, &two_inputs()).unwrap();
        assert!(request.ignored_params);
        assert_eq!(request.inputs[0].shape(), &[1, 1]);
    }

    #[test]
    fn a_single_input_takes_every_column_as_a_feature_in_order() {
        // Raw text: `json!` would sort the fields.
        let records = br#"{"dataframe_records": [{"c": 3, "a": 1, "b": 2}]}"#;
        let request = decode_json(records, &features()).unwrap();
        assert_eq!(
            request.inputs[0].data(),
            &TensorData::Fp32(vec![3.0, 1.0, 2.0])
        );
        let unnamed = json!({"dataframe_split": {"data": [[1, 2, 3], [4, 5, 6]]}});
        assert_eq!(
            decode(unnamed, &features()).unwrap().inputs[0].shape(),
            &[2, 3]
        );
        let csv = decode_csv(b"a,b,c\n1,2.5,-3e2\n", &features()).unwrap();
        assert_eq!(
            csv.inputs[0].data(),
            &TensorData::Fp32(vec![1.0, 2.5, -300.0])
        );
    }

    #[test]
    fn tensor_forms_decode_as_predict_does() {
        let request = decode(json!({"inputs": [[1, 2, 3]]}), &features()).unwrap();
        assert_eq!(request.form, Form::Tensors);
        assert!(!request.ignored_params);
        let keyed = json!({"instances": [{"plan": ["a"], "tenure": [1]}]});
        assert_eq!(decode(keyed, &two_inputs()).unwrap().form, Form::Tensors);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let sig = two_inputs();
        let err = |body: Value| decode(body, &sig).unwrap_err();
        assert!(err(json!([1])).contains("exactly one of"));
        assert!(err(json!({"inputs": {}, "instances": []})).contains("it has 2"));
        let unknown = json!({"dataframe_split": {"columns": ["age"], "data": [[1]]}});
        assert!(err(unknown).contains("unknown input 'age'"));
        let short = json!({"dataframe_split": {"columns": ["plan", "tenure"], "data": [["a"]]}});
        assert!(err(short).contains("row 0 has 1 values for 2 columns"));
        let uneven = json!({"dataframe_records": [{"plan": "a", "tenure": 1}, {"plan": "b"}]});
        assert!(err(uneven).contains("record 1"));
        assert!(err(json!({"dataframe_records": []})).contains("empty"));
        let csv = decode_csv(b"plan,tenure\na,x\n", &sig)
            .unwrap_err()
            .to_string();
        assert!(
            csv.contains("CSV row 0, column 'tenure': 'x' is not"),
            "{csv}"
        );
        let twice = decode_csv(b"plan,plan\na,b\n", &sig)
            .unwrap_err()
            .to_string();
        assert!(twice.contains("twice"), "{twice}");
    }

    fn encode(form: Form, tensors: &[Tensor]) -> Value {
        let outputs = Outputs {
            names: vec!["label", "probabilities"],
            labels: vec![None, None],
            tensors,
        };
        serde_json::from_slice(&encode_response(form, &outputs).unwrap()).unwrap()
    }

    #[test]
    fn answers_take_mlflows_shapes() {
        let tensors = [
            Tensor::new(vec![2, 1], TensorData::Int64(vec![1, 0])).unwrap(),
            Tensor::new(vec![2, 2], TensorData::Fp32(vec![0.25, 0.75, 0.5, 0.5])).unwrap(),
        ];
        assert_eq!(
            encode(Form::Frame { rows: 2 }, &tensors),
            json!({"predictions": [
                {"label": 1, "probabilities": [0.25, 0.75]},
                {"label": 0, "probabilities": [0.5, 0.5]}]})
        );
        assert_eq!(
            encode(Form::Tensors, &tensors),
            json!({"predictions": {"label": [[1], [0]], "probabilities": [[0.25, 0.75], [0.5, 0.5]]}})
        );
        let tensor_signature = json!({"inputs": [{"type": "tensor", "name": "plan"}]});
        let form = answer_form(Form::Frame { rows: 2 }, Some(&tensor_signature));
        assert_eq!(form, Form::Tensors);
        let column_signature = json!({"inputs": [{"type": "string", "name": "plan"}]});
        let form = answer_form(Form::Frame { rows: 2 }, Some(&column_signature));
        assert_eq!(form, Form::Frame { rows: 2 });
    }
}
