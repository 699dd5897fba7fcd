//! `pinserve inspect`: a model's inputs and outputs, as a table or as the v2 metadata's JSON.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    config::InspectArgs,
    model::{Model, ModelError, OnnxModel, SessionOptions, Signature, TensorSpec},
    protocol::{classes, v2::TensorMetadata},
    registry::{Location, ModelReference, RegistryError, Resolver, retry::RetryPolicy},
};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot start the async runtime to read {path}")]
    Runtime {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn run(args: &InspectArgs) -> Result<String, InspectError> {
    let options = SessionOptions {
        library: args.onnxruntime_lib.clone(),
        intra_op_threads: 1,
        ..SessionOptions::default()
    };
    let model = OnnxModel::load(&model_file(&args.path)?, &options)?;
    let signature = Arc::clone(model.signature());
    Ok(if args.json {
        to_json(&signature)
    } else {
        to_table(&signature)
    })
}

/// The file to describe: `path` itself, or for a version directory the model file `serve`
/// would load from it (the one its MLmodel names, else model.onnx, else its only .onnx file).
fn model_file(path: &Path) -> Result<PathBuf, InspectError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let reference = ModelReference::Direct {
        location: Location::Local(path.to_path_buf()),
        name: "inspect".to_owned(),
        version: "local".to_owned(),
    };
    let resolver = Resolver {
        retry: RetryPolicy::new(0),
        store: Default::default(),
        model_sha256: None,
        // Local files only: nothing here waits on a network.
        stall_timeout: std::time::Duration::from_secs(60),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| InspectError::Runtime {
            path: path.display().to_string(),
            source,
        })?;
    let plan = runtime
        .block_on(resolver.plan(&reference))
        .map_err(|err| match err {
            RegistryError::NotFound { location, .. } => RegistryError::NoModelFile { location },
            other => other,
        })?;
    Ok(plan
        .model_file
        .under(plan.local_dir.as_deref().unwrap_or(path)))
}

fn to_json(signature: &Signature) -> String {
    fn tensors(specs: &[TensorSpec]) -> Vec<TensorMetadata<'_>> {
        specs.iter().map(TensorMetadata::from).collect()
    }
    let document = serde_json::json!({
        "inputs": tensors(&signature.inputs),
        "outputs": tensors(&signature.outputs),
    });
    let mut text =
        serde_json::to_string_pretty(&document).expect("serialising to memory does not fail");
    text.push('\n');
    text
}

/// A ZipMap output gets a NOTE column that says so and lists its labels, in column order.
fn to_table(signature: &Signature) -> String {
    let with_notes = signature
        .outputs
        .iter()
        .any(|spec| spec.class_labels.is_some());
    let rows: Vec<Vec<String>> = [("input", &signature.inputs), ("output", &signature.outputs)]
        .into_iter()
        .flat_map(|(role, specs)| specs.iter().map(move |spec| row(role, spec, with_notes)))
        .collect();
    let mut header: Vec<String> = ["ROLE", "NAME", "DATATYPE", "SHAPE"]
        .map(str::to_owned)
        .into();
    if with_notes {
        header.push("NOTE".to_owned());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut table = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(table, "{}", cells.join("  ").trim_end());
    }
    table
}

fn row(role: &str, spec: &TensorSpec, with_notes: bool) -> Vec<String> {
    let mut cells = vec![
        role.to_owned(),
        spec.name.clone(),
        spec.datatype.to_string(),
        format!("{:?}", spec.protocol_shape()),
    ];
    if with_notes {
        cells.push(
            spec.class_labels
                .as_ref()
                .map_or_else(String::new, |labels| {
                    format!(
                        "ZipMap ({} labels): {}",
                        labels.key_type(),
                        classes::labels_json(labels)
                    )
                }),
        );
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ClassLabels, DataType,
        signature::examples::{matrix, one_input},
    };

    fn signature() -> Signature {
        one_input(
            "features",
            32,
            vec![matrix("probability", DataType::Fp32, 1)],
        )
    }

    #[test]
    fn table_aligns_columns() {
        assert_eq!(
            to_table(&signature()),
            "ROLE    NAME         DATATYPE  SHAPE\n\
             input   features     FP32      [-1, 32]\n\
             output  probability  FP32      [-1, 1]\n"
        );
    }

    #[test]
    fn zipmap_outputs_get_a_note_with_their_labels() {
        let mut zipmap = signature();
        zipmap.outputs.push(TensorSpec::zipmap(
            "output_probability",
            ClassLabels::Int64(vec![0, 1]),
        ));
        assert_eq!(
            to_table(&zipmap),
            "ROLE    NAME                DATATYPE  SHAPE     NOTE\n\
             input   features            FP32      [-1, 32]\n\
             output  probability         FP32      [-1, 1]\n\
             output  output_probability  FP32      [-1, 2]   ZipMap (int64 labels): [0,1]\n"
        );
    }

    #[test]
    fn json_matches_the_v2_metadata_form() {
        let value: serde_json::Value = serde_json::from_str(&to_json(&signature())).unwrap();
        assert_eq!(
            value["inputs"][0],
            serde_json::json!({"name": "features", "datatype": "FP32", "shape": [-1, 32]})
        );
    }
}
