//! scikit-learn classifiers converted with skl2onnx's defaults end in a ZipMap node: their
//! probabilities are `seq(map(int64|string, float))`, one map per row. pinserve serves such an
//! output as the FP32 matrix `[N, C]` it was before the ZipMap, one column per class in the
//! node's label order, so batching, drift, profiles and eval see an ordinary tensor; the
//! protocol layer puts the labels back where a client wants them.
//!
//! The labels come from the ZipMap node's `classlabels_int64s` / `classlabels_strings` in the
//! graph, not from the keys of the maps a warm-up run returns: ONNX Runtime's maps are sorted
//! by key (and `ort` hands them over as key/value pairs in that order), so they lose the
//! model's column order, and they exist only after a run, while `inspect` and the signature
//! need the labels at load time. The maps of every run are still checked against them.

use std::borrow::Cow;

/// The class labels of a ZipMap output, in the order of its probability columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClassLabels {
    Int64(Vec<i64>),
    Strings(Vec<String>),
}

impl ClassLabels {
    pub(crate) fn len(&self) -> usize {
        match self {
            ClassLabels::Int64(labels) => labels.len(),
            ClassLabels::Strings(labels) => labels.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Label `index` as text: `7`, `setosa`.
    pub(crate) fn text(&self, index: usize) -> Cow<'_, str> {
        match self {
            ClassLabels::Int64(labels) => Cow::Owned(labels[index].to_string()),
            ClassLabels::Strings(labels) => Cow::Borrowed(&labels[index]),
        }
    }

    /// The ONNX key type the maps must have: `int64` or `string`.
    pub(crate) fn key_type(&self) -> &'static str {
        match self {
            ClassLabels::Int64(_) => "int64",
            ClassLabels::Strings(_) => "string",
        }
    }
}

/// A map whose keys are not the ZipMap's labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ZipMapError {
    #[error("row {row} has {entries} classes, the ZipMap has {labels} labels")]
    WrongCount {
        row: usize,
        entries: usize,
        labels: usize,
    },
    #[error("row {row} has no probability for class {label}")]
    MissingLabel { row: usize, label: String },
}

/// The row-major `[rows.len(), labels.len()]` matrix of the maps' values, columns in `labels`
/// order. Maps whose keys come in label order (ONNX Runtime sorts them, and scikit-learn's
/// classes are sorted) are copied as they are; others are looked up label by label.
pub(crate) fn dense<K: PartialEq + ToString>(
    labels: &[K],
    rows: &[Vec<(K, f32)>],
) -> Result<Vec<f32>, ZipMapError> {
    let mut matrix = Vec::with_capacity(rows.len() * labels.len());
    for (row, entries) in rows.iter().enumerate() {
        if entries.len() != labels.len() {
            return Err(ZipMapError::WrongCount {
                row,
                entries: entries.len(),
                labels: labels.len(),
            });
        }
        if entries
            .iter()
            .zip(labels)
            .all(|((key, _), label)| key == label)
        {
            matrix.extend(entries.iter().map(|(_, value)| *value));
            continue;
        }
        for label in labels {
            let value = entries
                .iter()
                .find(|(key, _)| key == label)
                .ok_or_else(|| ZipMapError::MissingLabel {
                    row,
                    label: label.to_string(),
                })?;
            matrix.push(value.1);
        }
    }
    Ok(matrix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_unsorted_maps_land_in_label_order() {
        let labels = [7i64, -1, 0];
        let rows = vec![
            vec![(7, 0.5), (-1, 0.25), (0, 0.25)],
            vec![(-1, 0.1), (0, 0.2), (7, 0.7)],
        ];
        assert_eq!(
            dense(&labels, &rows).unwrap(),
            vec![0.5, 0.25, 0.25, 0.7, 0.1, 0.2]
        );
    }

    #[test]
    fn maps_must_hold_exactly_the_labels() {
        let labels = ["a".to_owned(), "b".to_owned()];
        let short = vec![vec![("a".to_owned(), 1.0)]];
        assert_eq!(
            dense(&labels, &short).unwrap_err().to_string(),
            "row 0 has 1 classes, the ZipMap has 2 labels"
        );
        let other = vec![vec![("a".to_owned(), 0.5), ("c".to_owned(), 0.5)]];
        assert_eq!(
            dense(&labels, &other).unwrap_err(),
            ZipMapError::MissingLabel {
                row: 0,
                label: "b".into()
            }
        );
    }

    #[test]
    fn labels_read_as_text() {
        let ints = ClassLabels::Int64(vec![-1, 7]);
        assert_eq!(ints.text(0), "-1");
        assert_eq!(ints.len(), 2);
        let names = ClassLabels::Strings(vec!["setosa".into()]);
        assert_eq!(names.text(0), "setosa");
        assert_eq!(names.key_type(), "string");
    }
}
