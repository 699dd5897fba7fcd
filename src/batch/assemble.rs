//! Stacking requests along dimension 0 into one model call, and splitting the answers back,
//! each request getting exactly its own rows, in order.

use crate::model::{ModelError, Tensor, TensorData, tensor::element_count};

/// What decides whether two requests may share a model call: the same outputs, and the same
/// shape for every input apart from dimension 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    inner_shapes: Vec<Vec<usize>>,
    outputs: Vec<usize>,
}

impl BatchKey {
    pub(crate) fn of(inputs: &[Tensor], outputs: &[usize]) -> BatchKey {
        BatchKey {
            inner_shapes: inputs
                .iter()
                .map(|t| t.shape().get(1..).unwrap_or_default().to_vec())
                .collect(),
            outputs: outputs.to_vec(),
        }
    }
}

/// Rows of a request: dimension 0 of its first input (the batch dimension).
pub(crate) fn rows_of(inputs: &[Tensor]) -> usize {
    inputs
        .first()
        .and_then(|tensor| tensor.shape().first().copied())
        .unwrap_or(1)
}

/// Concatenates the requests' inputs along dimension 0. Every request has the same number of
/// inputs with the same inner shapes (a [`BatchKey`] guarantees it).
pub fn concat(requests: &[&[Tensor]]) -> Vec<Tensor> {
    let Some(first) = requests.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|input| {
            let parts: Vec<&Tensor> = requests.iter().map(|request| &request[input]).collect();
            concat_one(&parts)
        })
        .collect()
}

fn concat_one(parts: &[&Tensor]) -> Tensor {
    let rows: usize = parts.iter().map(|t| t.shape()[0]).sum();
    let mut shape = parts[0].shape().to_vec();
    shape[0] = rows;
    let total = element_count(&shape).unwrap_or(0);
    macro_rules! gather {
        ($($variant:ident),*) => {
            match parts[0].data() {
                $(TensorData::$variant(_) => {
                    let mut values = Vec::with_capacity(total);
                    for part in parts {
                        if let TensorData::$variant(buf) = part.data() {
                            values.extend_from_slice(buf);
                        }
                    }
                    TensorData::$variant(values)
                })*
            }
        };
    }
    let data = gather!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
        Bytes
    );
    Tensor::new(shape, data).expect("the parts' rows add up to the stacked shape")
}

/// Splits each output along dimension 0 into one set of outputs per request, `rows[i]` rows for
/// request `i`. An output whose dimension 0 is not the batch's row count cannot be split.
pub fn split(outputs: Vec<Tensor>, rows: &[usize]) -> Result<Vec<Vec<Tensor>>, ModelError> {
    let total: usize = rows.iter().sum();
    let mut answers: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for (index, output) in outputs.into_iter().enumerate() {
        if output.shape().first() != Some(&total) {
            return Err(ModelError::Inference(format!(
                "output {index} has shape {:?}, which does not split into the batch's {total} rows",
                output.shape()
            )));
        }
        for (answer, part) in answers.iter_mut().zip(split_one(&output, rows)) {
            answer.push(part);
        }
    }
    Ok(answers)
}

fn split_one(tensor: &Tensor, rows: &[usize]) -> Vec<Tensor> {
    let inner = &tensor.shape()[1..];
    let stride: usize = inner.iter().product();
    let mut start = 0;
    rows.iter()
        .map(|&count| {
            let range = start * stride..(start + count) * stride;
            start += count;
            let shape = std::iter::once(count)
                .chain(inner.iter().copied())
                .collect();
            Tensor::new(shape, slice_rows(tensor.data(), range))
                .expect("a row range of the right length")
        })
        .collect()
}

/// The elements in `range`, as a buffer of the same type.
fn slice_rows(data: &TensorData, range: std::ops::Range<usize>) -> TensorData {
    macro_rules! slice {
        ($($variant:ident),*) => {
            match data {
                $(TensorData::$variant(values) => TensorData::$variant(values[range].to_vec()),)*
            }
        };
    }
    slice!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
        Bytes
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fp32(rows: usize, columns: usize, start: f32) -> Tensor {
        let values = (0..rows * columns).map(|i| start + i as f32).collect();
        Tensor::new(vec![rows, columns], TensorData::Fp32(values)).unwrap()
    }

    fn strings(rows: usize, tag: &str) -> Tensor {
        let values = (0..rows).map(|i| format!("{tag}{i}")).collect();
        Tensor::new(vec![rows, 1], TensorData::Bytes(values)).unwrap()
    }

    #[test]
    fn stacks_and_splits_back_exactly() {
        let a = vec![fp32(1, 3, 0.0), strings(1, "a")];
        let b = vec![fp32(2, 3, 100.0), strings(2, "b")];
        let stacked = concat(&[&a, &b]);
        assert_eq!(stacked[0].shape(), &[3, 3]);
        assert_eq!(
            stacked[1].data(),
            &TensorData::Bytes(vec!["a0".into(), "b0".into(), "b1".into()])
        );
        let answers = split(stacked, &[1, 2]).unwrap();
        assert_eq!(answers[0], a);
        assert_eq!(answers[1], b);
    }

    #[test]
    fn keys_separate_different_inner_shapes_and_outputs() {
        let narrow = [fp32(4, 3, 0.0)];
        let wide = [fp32(1, 4, 0.0)];
        assert_eq!(
            BatchKey::of(&narrow, &[0]),
            BatchKey::of(&[fp32(9, 3, 1.0)], &[0])
        );
        assert_ne!(BatchKey::of(&narrow, &[0]), BatchKey::of(&wide, &[0]));
        assert_ne!(BatchKey::of(&narrow, &[0]), BatchKey::of(&narrow, &[0, 1]));
        assert_eq!(rows_of(&narrow), 4);
    }

    #[test]
    fn an_output_without_the_batch_rows_is_an_error() {
        let total = Tensor::new(vec![1], TensorData::Fp32(vec![3.0])).unwrap();
        assert!(
            split(vec![total], &[1, 2])
                .unwrap_err()
                .to_string()
                .contains("does not split")
        );
    }

    proptest! {
        #[test]
        fn every_request_gets_its_own_rows_back(rows in prop::collection::vec(0usize..5, 1..8), columns in 1usize..4) {
            let requests: Vec<Vec<Tensor>> = rows
                .iter()
                .enumerate()
                .map(|(i, &r)| vec![fp32(r, columns, (i * 1000) as f32), strings(r, &format!("r{i}-"))])
                .collect();
            let views: Vec<&[Tensor]> = requests.iter().map(Vec::as_slice).collect();
            let answers = split(concat(&views), &rows).unwrap();
            prop_assert_eq!(answers, requests);
        }
    }
}
