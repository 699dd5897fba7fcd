//! Class labels on the wire, for the ZipMap outputs of scikit-learn classifiers (FP32 `[N, C]`
//! in the model, see `model::zipmap`) and Triton's classification extension.
//!
//! - V2 metadata and responses: the output's `parameters` hold `class_labels`, the labels in
//!   column order as JSON array text (`[0,1]`, `["setosa","versicolor"]`): V2 parameter values
//!   must be scalars, and the text keeps integer labels numbers and string labels strings.
//! - V2 requests: a requested output with `"parameters": {"classification": K}` is answered,
//!   as Triton does, with BYTES strings `"<score>:<index>[:<label>]"` for the K best classes
//!   of each row, best first (shape `[N, K]`, `[K]` for an output of rank 1). K above the
//!   number of classes is lowered to it.
//! - `/predict`: each row of a ZipMap output is an object keyed by label, `{"0": 0.1, "1": 0.9}`,
//!   as MLflow's and scikit-learn's `predict_proba` users read it.

use std::{cmp::Ordering, fmt::Display};

use serde::{Serialize, Serializer, ser::SerializeMap};

use crate::model::{ClassLabels, Tensor, TensorData, tensor::with_buffer};

/// The labels as JSON array text, in column order.
pub(crate) fn labels_json(labels: &ClassLabels) -> String {
    let text = match labels {
        ClassLabels::Int64(labels) => serde_json::to_string(labels),
        ClassLabels::Strings(labels) => serde_json::to_string(labels),
    };
    text.expect("serialising to memory does not fail")
}

/// The top `count` classes of each row of `tensor` as Triton's classification strings. Rows are
/// along dimension 0 for a tensor of rank 2 or more, the whole tensor otherwise.
pub(crate) fn classify(tensor: &Tensor, count: usize, labels: Option<&ClassLabels>) -> Tensor {
    let shape = tensor.shape();
    let (rows, classes) = match shape {
        [rows, rest @ ..] if !rest.is_empty() => (*rows, rest.iter().product()),
        _ => (1, tensor.data().len()),
    };
    let count = count.min(classes);
    let strings =
        with_buffer!(tensor.data(), values => top_classes(values, classes, count, labels));
    let shape = if shape.len() >= 2 {
        vec![rows, count]
    } else {
        vec![count]
    };
    Tensor::new(shape, TensorData::Bytes(strings)).expect("rows times count strings")
}

fn top_classes<T: PartialOrd + Display>(
    values: &[T],
    classes: usize,
    count: usize,
    labels: Option<&ClassLabels>,
) -> Vec<String> {
    let mut strings = Vec::with_capacity(values.len() / classes.max(1) * count);
    for row in values.chunks(classes.max(1)) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| descending(&row[a], &row[b]));
        strings.extend(order.into_iter().take(count).map(|index| match labels {
            Some(labels) => format!("{}:{index}:{}", row[index], labels.text(index)),
            None => format!("{}:{index}", row[index]),
        }));
    }
    strings
}

/// Larger first; values that compare with nothing (NaN) last, so the order stays total.
fn descending<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    let comparable = |value: &T| value.partial_cmp(value).is_some();
    comparable(b)
        .cmp(&comparable(a))
        .then_with(|| b.partial_cmp(a).unwrap_or(Ordering::Equal))
}

/// One row of a ZipMap output as `{label: probability, ...}`, in label order.
pub(crate) struct LabeledRow<'a> {
    pub(crate) labels: &'a ClassLabels,
    pub(crate) values: &'a [f32],
}

impl LabeledRow<'_> {
    /// The row's labels (as text) with their probabilities.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, f32)> {
        (0..self.values.len()).map(|index| (self.labels.text(index), self.values[index]))
    }
}

impl Serialize for LabeledRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for (label, value) in self.entries() {
            map.serialize_entry(&label, &value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::zipmap::dense;

    fn matrix(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::Fp32(values)).unwrap()
    }

    #[test]
    fn labels_keep_their_json_types() {
        assert_eq!(labels_json(&ClassLabels::Int64(vec![-1, 0, 7])), "[-1,0,7]");
        let names = ClassLabels::Strings(vec!["setosa".into(), "a \"b\"".into()]);
        assert_eq!(labels_json(&names), r#"["setosa","a \"b\""]"#);
    }

    #[test]
    fn classification_ranks_each_row_and_names_the_labels() {
        let labels = ClassLabels::Strings(vec!["a".into(), "b".into(), "c".into()]);
        let scores = matrix(vec![2, 3], vec![0.25, 0.5, 0.25, 0.7, 0.1, 0.2]);
        let top = classify(&scores, 2, Some(&labels));
        assert_eq!(top.shape(), &[2, 2]);
        assert_eq!(
            top.data(),
            &TensorData::Bytes(vec![
                "0.5:1:b".into(),
                "0.25:0:a".into(),
                "0.7:0:a".into(),
                "0.2:2:c".into()
            ])
        );
    }

    #[test]
    fn classification_without_labels_caps_the_count_and_puts_nan_last() {
        let top = classify(&matrix(vec![3], vec![f32::NAN, 1.0, 2.0]), 5, None);
        assert_eq!(top.shape(), &[3]);
        assert_eq!(
            top.data(),
            &TensorData::Bytes(vec!["2:2".into(), "1:1".into(), "NaN:0".into()])
        );
        let ints = Tensor::new(vec![1, 4], TensorData::Int64(vec![1, 5, 10, 4])).unwrap();
        assert_eq!(
            classify(&ints, 2, None).data(),
            &TensorData::Bytes(vec!["10:2".into(), "5:1".into()])
        );
    }

    #[test]
    fn rows_serialise_as_objects_keyed_by_label() {
        let labels = ClassLabels::Int64(vec![0, 1]);
        let row = LabeledRow {
            labels: &labels,
            values: &[0.25, 0.75],
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({"0": 0.25, "1": 0.75})
        );
    }

    /// Distinct labels and, per row, a probability for each, keyed in a shuffled order.
    fn labelled_maps() -> impl Strategy<Value = (Vec<i64>, Vec<Vec<(i64, f32)>>)> {
        proptest::collection::hash_set(any::<i64>(), 1..8).prop_flat_map(|labels| {
            let labels: Vec<i64> = labels.into_iter().collect();
            let count = labels.len();
            let row = (
                proptest::collection::vec(0.0f32..1.0, count),
                Just(labels.clone()),
            )
                .prop_map(|(values, labels)| labels.into_iter().zip(values).collect::<Vec<_>>())
                .prop_shuffle();
            (Just(labels), proptest::collection::vec(row, 0..6))
        })
    }

    proptest! {
        /// maps -> dense matrix (the model's side) -> maps (the wire's side) gives the maps back.
        #[test]
        fn maps_round_trip_through_the_matrix((labels, rows) in labelled_maps()) {
            let matrix = dense(&labels, &rows).unwrap();
            prop_assert_eq!(matrix.len(), rows.len() * labels.len());
            let class_labels = ClassLabels::Int64(labels.clone());
            for (values, original) in matrix.chunks(labels.len()).zip(&rows) {
                let row = LabeledRow { labels: &class_labels, values };
                let back: HashMap<String, f32> =
                    row.entries().map(|(label, value)| (label.into_owned(), value)).collect();
                let expected: HashMap<String, f32> =
                    original.iter().map(|(key, value)| (key.to_string(), *value)).collect();
                prop_assert_eq!(back, expected);
            }
        }
    }
}
