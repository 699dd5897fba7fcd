//! The ZipMap nodes of an ONNX file's main graph, read with prost. ONNX Runtime keeps node
//! attributes to itself (its C API exposes none for a loaded session), so the class labels come
//! from the file. Only the fields that lead to them are declared (numbers from onnx.proto);
//! prost skips every other field, weights included, without copying it.

use prost::Message;

use super::zipmap::ClassLabels;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    domain: String,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
}

/// Why the model file could not be read as an ONNX `ModelProto`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtoError {
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    #[error("a ZipMap's string class label is not UTF-8")]
    NotUtf8,
}

/// The outputs written by the `ai.onnx.ml` ZipMap nodes of the model's main graph, each with
/// the node's class labels.
pub(crate) fn zipmap_outputs(model: &[u8]) -> Result<Vec<(String, ClassLabels)>, ProtoError> {
    let model = ModelProto::decode(model)?;
    let nodes = model.graph.map(|graph| graph.node).unwrap_or_default();
    let mut found = Vec::new();
    for node in nodes {
        if node.op_type != "ZipMap" || node.domain != "ai.onnx.ml" {
            continue;
        }
        let Some(output) = node.output.into_iter().next() else {
            continue;
        };
        for attribute in node.attribute {
            if let Some(labels) = class_labels(attribute)? {
                found.push((output, labels));
                break;
            }
        }
    }
    Ok(found)
}

/// The labels an attribute holds when it is `classlabels_int64s` or `classlabels_strings`.
fn class_labels(attribute: AttributeProto) -> Result<Option<ClassLabels>, ProtoError> {
    Ok(match attribute.name.as_str() {
        "classlabels_int64s" => Some(ClassLabels::Int64(attribute.ints)),
        "classlabels_strings" => Some(ClassLabels::Strings(
            attribute
                .strings
                .into_iter()
                .map(|label| String::from_utf8(label).map_err(|_| ProtoError::NotUtf8))
                .collect::<Result<_, _>>()?,
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(op_type: &str, attribute: AttributeProto) -> Vec<u8> {
        let node = NodeProto {
            output: vec!["output_probability".into()],
            op_type: op_type.into(),
            attribute: vec![attribute],
            domain: "ai.onnx.ml".into(),
        };
        let other = NodeProto {
            op_type: "Identity".into(),
            output: vec!["label".into()],
            ..NodeProto::default()
        };
        let graph = GraphProto {
            node: vec![other, node],
        };
        ModelProto { graph: Some(graph) }.encode_to_vec()
    }

    #[test]
    fn reads_integer_labels_negative_included() {
        let labels = AttributeProto {
            name: "classlabels_int64s".into(),
            ints: vec![-1, 0, 7],
            ..AttributeProto::default()
        };
        let found = zipmap_outputs(&model("ZipMap", labels)).unwrap();
        assert_eq!(
            found,
            vec![(
                "output_probability".to_owned(),
                ClassLabels::Int64(vec![-1, 0, 7])
            )]
        );
    }

    #[test]
    fn reads_string_labels_and_ignores_other_nodes() {
        let labels = AttributeProto {
            name: "classlabels_strings".into(),
            strings: vec![b"setosa".to_vec(), b"virginica".to_vec()],
            ..AttributeProto::default()
        };
        let found = zipmap_outputs(&model("ZipMap", labels.clone())).unwrap();
        assert_eq!(
            found[0].1,
            ClassLabels::Strings(vec!["setosa".into(), "virginica".into()])
        );
        assert!(zipmap_outputs(&model("Cast", labels)).unwrap().is_empty());
    }

    #[test]
    fn truncated_data_are_an_error() {
        let labels = AttributeProto {
            name: "classlabels_int64s".into(),
            ints: vec![1, 2],
            ..AttributeProto::default()
        };
        let bytes = model("ZipMap", labels);
        assert!(zipmap_outputs(&bytes[..bytes.len() - 1]).is_err());
    }
}
