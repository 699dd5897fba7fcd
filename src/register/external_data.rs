//! The external-data files an ONNX model names: weights stored beside the `.onnx` file (models
//! over protobuf's 2 GiB limit, and MLflow's default `save_as_external_data=True`), which have to
//! be registered with it. Only the fields that lead to a tensor's location are declared; prost
//! skips every other field (weights included) without copying it.

use std::{collections::BTreeSet, path::Path};

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<FunctionProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FunctionProto {
    #[prost(message, repeated, tag = "7")]
    node: Vec<NodeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    g: Option<GraphProto>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphProto>,
    #[prost(message, optional, tag = "22")]
    sparse_tensor: Option<SparseTensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct SparseTensorProto {
    #[prost(message, optional, tag = "1")]
    values: Option<TensorProto>,
    #[prost(message, optional, tag = "2")]
    indices: Option<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExternalDataError {
    #[error("{path}: not an ONNX model: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: cannot read it: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{model}: its weights name the external-data file '{location}', which is not a plain \
         relative path inside the model's directory"
    )]
    OutsideDirectory { model: String, location: String },
    #[error("{model}: its weights are in '{location}', which is missing beside it")]
    Missing { model: String, location: String },
}

/// The relative paths of the external-data files `model` names, each checked to exist in its
/// directory, in sorted order.
pub(crate) fn external_files(model: &Path) -> Result<Vec<String>, ExternalDataError> {
    let shown = model.display().to_string();
    let bytes = std::fs::read(model).map_err(|source| ExternalDataError::Io {
        path: shown.clone(),
        source,
    })?;
    let proto =
        ModelProto::decode(bytes.as_slice()).map_err(|err| ExternalDataError::Unreadable {
            path: shown.clone(),
            reason: err.to_string(),
        })?;
    let mut locations = BTreeSet::new();
    if let Some(graph) = &proto.graph {
        graph_locations(graph, &mut locations);
    }
    for function in &proto.functions {
        nodes_locations(&function.node, &mut locations);
    }
    let directory = model.parent().unwrap_or(Path::new("."));
    locations
        .into_iter()
        .map(|location| {
            if !is_plain_relative(&location) {
                return Err(ExternalDataError::OutsideDirectory {
                    model: shown.clone(),
                    location,
                });
            }
            if !directory.join(&location).is_file() {
                return Err(ExternalDataError::Missing {
                    model: shown.clone(),
                    location,
                });
            }
            Ok(location)
        })
        .collect()
}

fn graph_locations(graph: &GraphProto, into: &mut BTreeSet<String>) {
    for tensor in &graph.initializer {
        tensor_location(tensor, into);
    }
    for sparse in &graph.sparse_initializer {
        sparse_locations(sparse, into);
    }
    nodes_locations(&graph.node, into);
}

fn nodes_locations(nodes: &[NodeProto], into: &mut BTreeSet<String>) {
    for attribute in nodes.iter().flat_map(|node| &node.attribute) {
        attribute.t.iter().for_each(|t| tensor_location(t, into));
        attribute
            .tensors
            .iter()
            .for_each(|t| tensor_location(t, into));
        if let Some(sparse) = &attribute.sparse_tensor {
            sparse_locations(sparse, into);
        }
        attribute.g.iter().for_each(|g| graph_locations(g, into));
        attribute
            .graphs
            .iter()
            .for_each(|g| graph_locations(g, into));
    }
}

fn sparse_locations(sparse: &SparseTensorProto, into: &mut BTreeSet<String>) {
    for tensor in sparse.values.iter().chain(&sparse.indices) {
        tensor_location(tensor, into);
    }
}

fn tensor_location(tensor: &TensorProto, into: &mut BTreeSet<String>) {
    if let Some(entry) = tensor.external_data.iter().find(|e| e.key == "location") {
        into.insert(entry.value.clone());
    }
}

/// ONNX Runtime resolves a location against the model's directory; anything that could leave it
/// (absolute, `..`) is refused rather than uploaded from elsewhere.
fn is_plain_relative(location: &str) -> bool {
    let path = Path::new(location);
    !location.is_empty()
        && path
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor_at(location: &str) -> TensorProto {
        TensorProto {
            external_data: vec![
                StringStringEntryProto {
                    key: "location".to_owned(),
                    value: location.to_owned(),
                },
                StringStringEntryProto {
                    key: "offset".to_owned(),
                    value: "0".to_owned(),
                },
            ],
        }
    }

    fn write_model(dir: &Path, graph: GraphProto) -> std::path::PathBuf {
        let path = dir.join("model.onnx");
        let model = ModelProto {
            graph: Some(graph),
            functions: Vec::new(),
        };
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    }

    #[test]
    fn finds_initializers_and_subgraph_tensors_once_each() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["weights.bin", "sub.bin"] {
            std::fs::write(dir.path().join(name), b"w").unwrap();
        }
        let subgraph = GraphProto {
            initializer: vec![tensor_at("sub.bin")],
            ..GraphProto::default()
        };
        let graph = GraphProto {
            initializer: vec![tensor_at("weights.bin"), tensor_at("weights.bin")],
            node: vec![NodeProto {
                attribute: vec![AttributeProto {
                    g: Some(subgraph),
                    ..AttributeProto::default()
                }],
            }],
            ..GraphProto::default()
        };
        let model = write_model(dir.path(), graph);
        assert_eq!(external_files(&model).unwrap(), ["sub.bin", "weights.bin"]);
    }

    #[test]
    fn refuses_locations_outside_the_directory_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        for location in ["../secret", "/etc/passwd"] {
            let graph = GraphProto {
                initializer: vec![tensor_at(location)],
                ..GraphProto::default()
            };
            let err = external_files(&write_model(dir.path(), graph)).unwrap_err();
            assert!(
                matches!(err, ExternalDataError::OutsideDirectory { .. }),
                "{err}"
            );
        }
        let graph = GraphProto {
            initializer: vec![tensor_at("gone.bin")],
            ..GraphProto::default()
        };
        let err = external_files(&write_model(dir.path(), graph)).unwrap_err();
        assert!(
            err.to_string().contains("'gone.bin', which is missing"),
            "{err}"
        );
    }

    #[test]
    fn the_fixtures_are_self_contained() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models-fixtures/tabular_mlp/1/model.onnx");
        assert!(external_files(&fixture).unwrap().is_empty());
        let garbage = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(garbage.path(), [0xff; 16]).unwrap();
        let err = external_files(garbage.path()).unwrap_err();
        assert!(matches!(err, ExternalDataError::Unreadable { .. }), "{err}");
    }
}
