//! Which outputs answer the evaluation, read from the model's output signature unless the
//! caller names them. sklearn-onnx classifiers answer a label tensor `[N]` and probabilities
//! `[N, C]` (a ZipMap, served as that matrix, also names the classes of its columns);
//! regressors answer one float tensor `[N]` or `[N, 1]`.

use crate::model::{DataType, Dim, Signature, TensorSpec};

use super::label::Label;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Classification,
    Regression,
}

impl Task {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }
}

/// What the caller fixed; everything left `None` is inferred.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub task: Option<Task>,
    pub label_output: Option<String>,
    /// Class scores for a classifier; the predicted value for a regressor.
    pub score_output: Option<String>,
    pub positive_class: Option<String>,
    /// The classes in the order of the score columns.
    pub classes: Option<Vec<String>>,
}

/// How to read predictions from the model, and which parts of that were inferred (so the
/// report can say so).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    pub task: Task,
    /// Predicted labels (classification).
    pub(crate) label_output: Option<String>,
    /// Class scores (classification) or predicted values (regression).
    pub(crate) score_output: Option<String>,
    /// Classes in score-column order, given by the caller or a ZipMap score output's labels;
    /// `None` means the sorted observed labels.
    pub(crate) classes: Option<Vec<Label>>,
    /// Explicit positive class for binary metrics; `None` means `1`, else the second class.
    pub(crate) positive_class: Option<Label>,
    /// Signature indices of the outputs to request: the label output first, then the scores.
    pub outputs: Vec<usize>,
    pub(crate) inferred: Inferred,
}

/// Which of the plan's choices came from the signature rather than the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Inferred {
    pub(crate) task: bool,
    pub(crate) label_output: bool,
    pub(crate) score_output: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("the model has no output '{name}'; its outputs are {known}")]
    UnknownOutput { name: String, known: String },
    #[error("output '{name}' ({datatype} {shape:?}) cannot hold {role}")]
    Unsuitable {
        name: String,
        datatype: DataType,
        shape: Vec<i64>,
        role: &'static str,
    },
    #[error("cannot tell the task from the outputs {outputs}: {reason}; give the task and outputs")]
    Ambiguous { outputs: String, reason: String },
    #[error("a classifier needs a label output or a score output; the model has neither")]
    NothingToEvaluate,
}

fn describe(outputs: &[TensorSpec]) -> String {
    let parts: Vec<String> = outputs
        .iter()
        .map(|o| format!("'{}' {} {:?}", o.name, o.datatype, o.protocol_shape()))
        .collect();
    parts.join(", ")
}

/// One value per row: `[N]` or `[N, 1]`.
fn is_per_row(spec: &TensorSpec) -> bool {
    matches!(spec.dims.as_slice(), [_] | [_, Dim::Fixed(1)])
}

fn is_label(spec: &TensorSpec) -> bool {
    matches!(
        spec.datatype,
        DataType::Int64 | DataType::Int32 | DataType::Bytes
    ) && is_per_row(spec)
}

fn is_float(spec: &TensorSpec) -> bool {
    matches!(spec.datatype, DataType::Fp32 | DataType::Fp64)
}

/// Class scores: `[N, C]` floats (or one positive-class score per row).
fn is_scores(spec: &TensorSpec) -> bool {
    is_float(spec) && (spec.dims.len() == 2 || is_per_row(spec))
}

fn is_value(spec: &TensorSpec) -> bool {
    (is_float(spec) || is_label(spec)) && is_per_row(spec)
}

/// Decides the task and the outputs to read, from `overrides` where given.
pub fn infer(signature: &Signature, overrides: &Overrides) -> Result<TaskPlan, TaskError> {
    let outputs = &signature.outputs;
    let label = overrides
        .label_output
        .as_deref()
        .map(|name| find(outputs, name, is_label, "class labels"))
        .transpose()?;
    let (task, task_inferred) = match overrides.task {
        Some(task) => (task, false),
        None => (infer_task(outputs, label.is_some())?, true),
    };
    let plan = match task {
        Task::Classification => classification(outputs, label, overrides)?,
        Task::Regression => regression(outputs, overrides)?,
    };
    Ok(TaskPlan {
        inferred: Inferred {
            task: task_inferred,
            ..plan.inferred
        },
        classes: overrides
            .classes
            .as_ref()
            .map(|classes| classes.iter().map(|c| Label::parse(c)).collect())
            .or_else(|| model_classes(outputs, plan.score_output.as_deref())),
        positive_class: overrides.positive_class.as_deref().map(Label::parse),
        ..plan
    })
}

/// The labels of a ZipMap score output, which name its columns: the classes the model knows,
/// in its order, even those the held-out data never show.
fn model_classes(outputs: &[TensorSpec], score_output: Option<&str>) -> Option<Vec<Label>> {
    let spec = outputs
        .iter()
        .find(|o| Some(o.name.as_str()) == score_output)?;
    let labels = spec.class_labels.as_ref()?;
    Some(
        (0..labels.len())
            .map(|i| Label::parse(&labels.text(i)))
            .collect(),
    )
}

fn infer_task(outputs: &[TensorSpec], label_given: bool) -> Result<Task, TaskError> {
    if label_given || outputs.iter().any(is_label) {
        return Ok(Task::Classification);
    }
    let values: Vec<&TensorSpec> = outputs.iter().filter(|o| is_value(o)).collect();
    match values.as_slice() {
        [_] => Ok(Task::Regression),
        [] => Err(TaskError::Ambiguous {
            outputs: describe(outputs),
            reason: "no integer or string label output, and no single float output [N] or [N, 1]"
                .to_owned(),
        }),
        _ => Err(TaskError::Ambiguous {
            outputs: describe(outputs),
            reason: "several float outputs could be the prediction".to_owned(),
        }),
    }
}

fn find(
    outputs: &[TensorSpec],
    name: &str,
    fits: fn(&TensorSpec) -> bool,
    role: &'static str,
) -> Result<usize, TaskError> {
    let index =
        outputs
            .iter()
            .position(|o| o.name == name)
            .ok_or_else(|| TaskError::UnknownOutput {
                name: name.to_owned(),
                known: describe(outputs),
            })?;
    let spec = &outputs[index];
    if !fits(spec) {
        return Err(TaskError::Unsuitable {
            name: spec.name.clone(),
            datatype: spec.datatype,
            shape: spec.protocol_shape(),
            role,
        });
    }
    Ok(index)
}

/// The one output that `fits`, or `None` when there is none; several are ambiguous.
fn only(
    outputs: &[TensorSpec],
    fits: impl Fn(&TensorSpec) -> bool,
    role: &str,
) -> Result<Option<usize>, TaskError> {
    let mut found = outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| fits(o))
        .map(|(i, _)| i);
    match (found.next(), found.next()) {
        (first, None) => Ok(first),
        _ => Err(TaskError::Ambiguous {
            outputs: describe(outputs),
            reason: format!("several outputs could hold the {role}"),
        }),
    }
}

/// A named output, or the only one that fits; the flag says whether it was inferred.
fn choose(
    outputs: &[TensorSpec],
    named: Option<&str>,
    fits: fn(&TensorSpec) -> bool,
    role: &'static str,
) -> Result<(Option<usize>, bool), TaskError> {
    match named {
        Some(name) => Ok((Some(find(outputs, name, fits, role)?), false)),
        None => Ok((only(outputs, fits, role)?, true)),
    }
}

fn classification(
    outputs: &[TensorSpec],
    label: Option<usize>,
    overrides: &Overrides,
) -> Result<TaskPlan, TaskError> {
    let (label, label_inferred) = match label {
        Some(index) => (Some(index), false),
        None => (only(outputs, is_label, "class labels")?, true),
    };
    let (scores, scores_inferred) = choose(
        outputs,
        overrides.score_output.as_deref(),
        is_scores,
        "class scores",
    )?;
    if label.is_none() && scores.is_none() {
        return Err(TaskError::NothingToEvaluate);
    }
    Ok(TaskPlan {
        task: Task::Classification,
        label_output: label.map(|i| outputs[i].name.clone()),
        score_output: scores.map(|i| outputs[i].name.clone()),
        classes: None,
        positive_class: None,
        outputs: label.into_iter().chain(scores).collect(),
        inferred: Inferred {
            task: false,
            label_output: label.is_some() && label_inferred,
            score_output: scores.is_some() && scores_inferred,
        },
    })
}

fn regression(outputs: &[TensorSpec], overrides: &Overrides) -> Result<TaskPlan, TaskError> {
    let named = overrides.score_output.as_deref();
    let (value, inferred) = choose(outputs, named, is_value, "predicted values")?;
    let value = value.ok_or_else(|| TaskError::Ambiguous {
        outputs: describe(outputs),
        reason: "no output [N] or [N, 1] holds one value per row".to_owned(),
    })?;
    Ok(TaskPlan {
        task: Task::Regression,
        label_output: None,
        score_output: Some(outputs[value].name.clone()),
        classes: None,
        positive_class: None,
        outputs: vec![value],
        inferred: Inferred {
            task: false,
            label_output: false,
            score_output: inferred,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::signature::examples::one_input;

    fn spec(name: &str, datatype: DataType, dims: &[Option<usize>]) -> TensorSpec {
        let dims = dims
            .iter()
            .map(|d| d.map_or(Dim::Dynamic(None), Dim::Fixed))
            .collect();
        TensorSpec::new(name, datatype, dims)
    }

    fn signature(outputs: Vec<TensorSpec>) -> Signature {
        one_input("input", 4, outputs)
    }

    fn sklearn_classifier() -> Signature {
        signature(vec![
            spec("label", DataType::Int64, &[None]),
            spec("probabilities", DataType::Fp32, &[None, Some(2)]),
        ])
    }

    #[test]
    fn sklearn_classifier_is_inferred() {
        let plan = infer(&sklearn_classifier(), &Overrides::default()).unwrap();
        assert_eq!(plan.task, Task::Classification);
        assert_eq!(plan.label_output.as_deref(), Some("label"));
        assert_eq!(plan.score_output.as_deref(), Some("probabilities"));
        assert_eq!(plan.outputs, [0, 1]);
        assert!(plan.inferred.task && plan.inferred.label_output && plan.inferred.score_output);
    }

    #[test]
    fn a_zipmap_score_output_names_the_classes() {
        let labels = crate::model::ClassLabels::Strings(vec!["setosa".into(), "virginica".into()]);
        let sig = signature(vec![
            spec("output_label", DataType::Bytes, &[None]),
            TensorSpec::zipmap("output_probability", labels),
        ]);
        let plan = infer(&sig, &Overrides::default()).unwrap();
        assert_eq!(plan.score_output.as_deref(), Some("output_probability"));
        assert_eq!(
            plan.classes,
            Some(vec![Label::parse("setosa"), Label::parse("virginica")])
        );
        let explicit = Overrides {
            classes: Some(vec!["virginica".into(), "setosa".into()]),
            ..Overrides::default()
        };
        let plan = infer(&sig, &explicit).unwrap();
        assert_eq!(plan.classes.unwrap()[0], Label::parse("virginica"));
        assert_eq!(
            infer(&sklearn_classifier(), &Overrides::default())
                .unwrap()
                .classes,
            None
        );
    }

    #[test]
    fn single_float_output_is_a_regressor() {
        for dims in [&[None][..], &[None, Some(1)]] {
            let sig = signature(vec![spec("variable", DataType::Fp32, dims)]);
            let plan = infer(&sig, &Overrides::default()).unwrap();
            assert_eq!(plan.task, Task::Regression);
            assert_eq!(plan.score_output.as_deref(), Some("variable"));
        }
    }

    #[test]
    fn overrides_win_and_are_not_marked_inferred() {
        let overrides = Overrides {
            task: Some(Task::Classification),
            score_output: Some("probabilities".to_owned()),
            positive_class: Some("0".to_owned()),
            classes: Some(vec!["0".to_owned(), "1".to_owned()]),
            ..Overrides::default()
        };
        let plan = infer(&sklearn_classifier(), &overrides).unwrap();
        assert!(!plan.inferred.task && !plan.inferred.score_output);
        assert!(plan.inferred.label_output);
        assert_eq!(plan.positive_class, Some(Label::Int(0)));
        assert_eq!(plan.classes, Some(vec![Label::Int(0), Label::Int(1)]));
    }

    #[test]
    fn regression_can_be_forced_on_a_probability() {
        let sig = signature(vec![spec("probability", DataType::Fp32, &[None, Some(1)])]);
        let overrides = Overrides {
            task: Some(Task::Classification),
            ..Overrides::default()
        };
        let plan = infer(&sig, &overrides).unwrap();
        assert_eq!(plan.label_output, None);
        assert_eq!(plan.score_output.as_deref(), Some("probability"));
    }

    #[test]
    fn unknown_and_unsuitable_outputs_are_named() {
        let overrides = Overrides {
            label_output: Some("nope".to_owned()),
            ..Overrides::default()
        };
        let err = infer(&sklearn_classifier(), &overrides).unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
        let overrides = Overrides {
            label_output: Some("probabilities".to_owned()),
            ..Overrides::default()
        };
        let err = infer(&sklearn_classifier(), &overrides).unwrap_err();
        assert!(matches!(err, TaskError::Unsuitable { .. }), "{err}");
    }

    #[test]
    fn two_float_outputs_are_ambiguous() {
        let sig = signature(vec![
            spec("a", DataType::Fp32, &[None]),
            spec("b", DataType::Fp32, &[None]),
        ]);
        let err = infer(&sig, &Overrides::default()).unwrap_err();
        assert!(matches!(err, TaskError::Ambiguous { .. }), "{err}");
    }
}
