//! The decoder that [`super::decode_request`] replaced, through a `serde_json::Value` tree: the
//! reference its property tests compare with. Slow and memory-hungry, but plainly right.

use serde_json::Value;

use super::Form;
use crate::{
    model::{Signature, Tensor, tensor::element_count},
    protocol::json,
};

/// The request's form and inputs (in signature order), or that it was refused.
pub(super) fn decode(body: &[u8], signature: &Signature) -> Option<(Form, Vec<Tensor>)> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let (form, columns) = match (object.remove("instances"), object.remove("inputs")) {
        (Some(instances), None) => rows_to_columns(instances, signature)?,
        (None, Some(Value::Object(fields))) => (Form::Columns, fields.into_iter().collect()),
        (None, Some(value)) if signature.inputs.len() == 1 => (
            Form::Columns,
            vec![(signature.inputs[0].name.clone(), value)],
        ),
        _ => return None,
    };
    let named = columns
        .into_iter()
        .map(|(name, column)| Some((name.clone(), column_tensor(signature, &name, &column)?)))
        .collect::<Option<Vec<_>>>()?;
    Some((form, signature.bind_inputs(named).ok()?))
}

fn rows_to_columns(
    instances: Value,
    signature: &Signature,
) -> Option<(Form, Vec<(String, Value)>)> {
    let Value::Array(rows) = instances else {
        return None;
    };
    if rows.is_empty() {
        return None;
    }
    let form = Form::Rows { count: rows.len() };
    if !rows.iter().any(Value::is_object) {
        let [only] = signature.inputs.as_slice() else {
            return None;
        };
        return Some((form, vec![(only.name.clone(), Value::Array(rows))]));
    }
    let mut columns: Vec<(String, Vec<Value>)> = Vec::new();
    for (index, row) in rows.into_iter().enumerate() {
        let Value::Object(fields) = row else {
            return None;
        };
        if index > 0 && fields.len() != columns.len() {
            return None;
        }
        for (name, value) in fields {
            match columns.iter_mut().find(|(column, _)| *column == name) {
                Some((_, values)) => values.push(value),
                None if index == 0 => columns.push((name, vec![value])),
                None => return None,
            }
        }
    }
    let columns = columns
        .into_iter()
        .map(|(name, values)| (name, Value::Array(values)))
        .collect();
    Some((form, columns))
}

fn column_tensor(signature: &Signature, name: &str, column: &Value) -> Option<Tensor> {
    let spec = signature.input(name).ok()?;
    let shape = nested_shape(column)?;
    spec.check_shape(&shape).ok()?;
    let data = json::decode(spec.datatype, column, element_count(&shape)?).ok()?;
    Tensor::new(shape, data).ok()
}

fn nested_shape(value: &Value) -> Option<Vec<usize>> {
    let Value::Array(items) = value else {
        return Some(Vec::new());
    };
    let Some(first) = items.first() else {
        return Some(vec![0]);
    };
    let inner = nested_shape(first)?;
    for item in &items[1..] {
        if nested_shape(item)? != inner {
            return None;
        }
    }
    Some(std::iter::once(items.len()).chain(inner).collect())
}
