//! Metrics that equal scikit-learn's (1.9) on the same predictions.
//!
//! Rows are collected batch by batch into [`Truth`] and [`Predictions`], which keep only what
//! the metrics need: a 4-byte class index per label, the class scores, or one value per row.
//! [`Evaluation`] prepares them once (classes, score columns, the rows sorted by each class's
//! score) so that the bootstrap can recompute every metric for a resample in O(rows): a
//! resample is a count per row ([`Evaluation::metrics_weighted`]), and sklearn's metrics with
//! integer sample weights equal the metrics of the rows repeated that often.

use std::collections::BTreeMap;

use super::{
    data::Target,
    label::{Label, LabelColumn},
    task::{Task, TaskPlan},
};
use crate::model::{DataType, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("output '{name}': {reason}")]
    BadOutput { name: String, reason: String },
    #[error("the target holds {value}, which is not a class label (an integer or a string)")]
    NotALabel { value: f64 },
    #[error("a regression target must be numeric; it holds the string '{0}'")]
    TextTarget(String),
    #[error("{truth} target rows but {predicted} predicted rows")]
    RowMismatch { truth: usize, predicted: usize },
    #[error("no rows to evaluate")]
    Empty,
    #[error(
        "the data and predictions hold {found} classes ({classes}) but the scores have {columns} columns; give the classes explicitly"
    )]
    ClassesUnknown {
        found: usize,
        classes: String,
        columns: usize,
    },
    #[error("class '{label}' is not among the model's classes ({classes})")]
    UnknownClass { label: Label, classes: String },
}

/// The target column, collected over the batches.
#[derive(Debug, Clone)]
pub enum Truth {
    Values(Vec<f64>),
    Labels(LabelColumn),
}

impl Truth {
    pub fn new(task: Task) -> Truth {
        match task {
            Task::Classification => Truth::Labels(LabelColumn::default()),
            Task::Regression => Truth::Values(Vec::new()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Truth::Values(values) => values.len(),
            Truth::Labels(labels) => labels.len(),
        }
    }

    /// Appends one batch's target; numbers become class labels when classifying.
    pub fn push(&mut self, target: Target) -> Result<(), MetricError> {
        match (self, target) {
            (Truth::Values(values), Target::Numeric(batch)) => values.extend(batch),
            (Truth::Values(_), Target::Labels(batch)) => {
                let first = batch.into_iter().next().unwrap_or_default();
                return Err(MetricError::TextTarget(first));
            }
            (Truth::Labels(labels), Target::Numeric(batch)) => {
                for value in batch {
                    labels.push(Label::from_number(value).ok_or(MetricError::NotALabel { value })?);
                }
            }
            (Truth::Labels(labels), Target::Labels(batch)) => {
                batch
                    .into_iter()
                    .for_each(|text| labels.push(Label::parse(&text)));
            }
        }
        Ok(())
    }
}

/// Class scores, row-major `[rows, columns]`, with the machine epsilon of the model's dtype
/// (sklearn clips probabilities to `[eps, 1 - eps]` of the array's own dtype).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scores {
    pub(crate) values: Vec<f64>,
    pub(crate) columns: usize,
    eps: f64,
}

/// One model's predictions, collected from its outputs batch by batch.
#[derive(Debug, Clone)]
pub struct Predictions {
    task: Task,
    label_output: Option<String>,
    score_output: Option<String>,
    labels: LabelColumn,
    scores: Scores,
    values: Vec<f64>,
}

impl Predictions {
    pub fn new(plan: &TaskPlan) -> Predictions {
        Predictions {
            task: plan.task,
            label_output: plan.label_output.clone(),
            score_output: plan.score_output.clone(),
            labels: LabelColumn::default(),
            scores: Scores::default(),
            values: Vec::new(),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        match (self.task, &self.label_output) {
            (Task::Regression, _) => self.values.len(),
            (Task::Classification, Some(_)) => self.labels.len(),
            (Task::Classification, None) => self.scores.values.len() / self.scores.columns.max(1),
        }
    }

    /// Appends one batch: `outputs` as the model answered the plan's `outputs`, in that order.
    pub fn push(&mut self, outputs: &[Tensor]) -> Result<(), MetricError> {
        let expected =
            usize::from(self.label_output.is_some()) + usize::from(self.score_output.is_some());
        if outputs.len() != expected {
            return Err(bad(
                "(all)",
                format!("expected {expected} outputs, got {}", outputs.len()),
            ));
        }
        let mut outputs = outputs.iter();
        let mut rows = Vec::with_capacity(2);
        if let Some(name) = &self.label_output {
            let tensor = outputs.next().expect("counted");
            rows.push(push_labels(&mut self.labels, name, tensor)?);
        }
        if let Some(name) = &self.score_output {
            let tensor = outputs.next().expect("counted");
            rows.push(match self.task {
                Task::Regression => push_values(&mut self.values, name, tensor)?,
                Task::Classification => push_scores(&mut self.scores, name, tensor)?,
            });
        }
        if rows.len() == 2 && rows[0] != rows[1] {
            return Err(bad(
                self.score_output.as_deref().unwrap_or_default(),
                format!("{} rows, but the label output has {}", rows[1], rows[0]),
            ));
        }
        Ok(())
    }
}

fn bad(name: &str, reason: impl ToString) -> MetricError {
    MetricError::BadOutput {
        name: name.to_owned(),
        reason: reason.to_string(),
    }
}

/// Rows of a per-row output, `[N]` or `[N, 1]`.
fn per_row(name: &str, tensor: &Tensor) -> Result<usize, MetricError> {
    match tensor.shape() {
        [rows] | [rows, 1] => Ok(*rows),
        shape => Err(bad(
            name,
            format!("expected one value per row, [N] or [N, 1], got shape {shape:?}"),
        )),
    }
}

fn numbers(name: &str, data: &TensorData) -> Result<Vec<f64>, MetricError> {
    Ok(match data {
        TensorData::Fp32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp64(v) => v.clone(),
        TensorData::Fp16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Int32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        other => return Err(bad(name, format!("{} is not numeric", other.datatype()))),
    })
}

fn push_values(values: &mut Vec<f64>, name: &str, tensor: &Tensor) -> Result<usize, MetricError> {
    let rows = per_row(name, tensor)?;
    values.extend(numbers(name, tensor.data())?);
    Ok(rows)
}

fn push_labels(
    labels: &mut LabelColumn,
    name: &str,
    tensor: &Tensor,
) -> Result<usize, MetricError> {
    let rows = per_row(name, tensor)?;
    match tensor.data() {
        TensorData::Int64(v) => v.iter().for_each(|&x| labels.push(Label::Int(x))),
        TensorData::Int32(v) => v.iter().for_each(|&x| labels.push(Label::Int(x.into()))),
        TensorData::Bytes(v) => v.iter().for_each(|x| labels.push(Label::parse(x))),
        other => {
            return Err(bad(
                name,
                format!("{} labels are not supported", other.datatype()),
            ));
        }
    }
    Ok(rows)
}

fn push_scores(scores: &mut Scores, name: &str, tensor: &Tensor) -> Result<usize, MetricError> {
    let (rows, columns) = match tensor.shape() {
        [rows] => (*rows, 1),
        [rows, columns] => (*rows, *columns),
        shape => {
            return Err(bad(
                name,
                format!("expected scores [N, C], got shape {shape:?}"),
            ));
        }
    };
    let eps = match tensor.datatype() {
        DataType::Fp32 => f64::from(f32::EPSILON),
        DataType::Fp64 => f64::EPSILON,
        other => {
            return Err(bad(
                name,
                format!("scores must be FP32 or FP64, got {other}"),
            ));
        }
    };
    if scores.values.is_empty() {
        scores.columns = columns;
        scores.eps = eps;
    } else if scores.columns != columns {
        return Err(bad(
            name,
            format!(
                "{columns} score columns, earlier batches had {}",
                scores.columns
            ),
        ));
    }
    scores.values.extend(numbers(name, tensor.data())?);
    Ok(rows)
}

/// Predictions matched with the truth and prepared for repeated, weighted evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    rows: usize,
    kind: Prepared,
}

#[derive(Debug, Clone)]
enum Prepared {
    Regression {
        truth: Vec<f64>,
        predicted: Vec<f64>,
    },
    Classification(Classified),
}

#[derive(Debug, Clone)]
struct Classified {
    classes: Vec<Label>,
    /// Each row's true and predicted class, as positions in `classes`.
    truth: Vec<u32>,
    predicted: Vec<u32>,
    /// Binary metrics are on this class; `None` for multiclass, or when it never occurs.
    positive: Option<u32>,
    binary: bool,
    scores: Option<ScoreTable>,
}

/// Scores with, for each ROC curve (the positive class, or every class one-vs-rest), its class,
/// its score column and the rows sorted by that score, highest first.
#[derive(Debug, Clone)]
struct ScoreTable {
    scores: Scores,
    probabilities: bool,
    curves: Vec<Curve>,
}

#[derive(Debug, Clone)]
struct Curve {
    class: u32,
    column: usize,
    order: Vec<u32>,
}

impl Evaluation {
    pub fn new(
        plan: &TaskPlan,
        predictions: &Predictions,
        truth: &Truth,
    ) -> Result<Evaluation, MetricError> {
        let rows = truth.len();
        if predictions.rows() != rows {
            return Err(MetricError::RowMismatch {
                truth: rows,
                predicted: predictions.rows(),
            });
        }
        if rows == 0 {
            return Err(MetricError::Empty);
        }
        let kind = match truth {
            Truth::Values(values) => Prepared::Regression {
                truth: values.clone(),
                predicted: predictions.values.clone(),
            },
            Truth::Labels(labels) => {
                Prepared::Classification(Classified::new(plan, predictions, labels)?)
            }
        };
        Ok(Evaluation { rows, kind })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The classes in score-column order (empty for regression).
    pub fn classes(&self) -> &[Label] {
        match &self.kind {
            Prepared::Classification(c) => &c.classes,
            Prepared::Regression { .. } => &[],
        }
    }

    /// The class binary metrics are computed on, if the task is binary classification.
    pub fn positive_class(&self) -> Option<&Label> {
        match &self.kind {
            Prepared::Classification(c) if c.binary => c.positive.map(|p| &c.classes[p as usize]),
            _ => None,
        }
    }

    /// Point metrics by name: `accuracy`, `precision`, `recall`, `f1`, `roc_auc`, `log_loss` or
    /// `rmse`, `mae`, `r2`. A metric that is undefined on these rows (AUC with one class
    /// present) is left out.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        self.metrics_weighted(&vec![1; self.rows])
    }

    /// The metrics with row `i` counted `weights[i]` times, as sklearn's `sample_weight`.
    pub(crate) fn metrics_weighted(&self, weights: &[u32]) -> BTreeMap<String, f64> {
        assert_eq!(weights.len(), self.rows, "one weight per row");
        let named: Vec<(&str, Option<f64>)> = match &self.kind {
            Prepared::Regression { truth, predicted } => regression(truth, predicted, weights),
            Prepared::Classification(c) => c.metrics(weights),
        };
        named
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?)))
            .collect()
    }
}

fn regression<'a>(
    truth: &[f64],
    predicted: &[f64],
    weights: &[u32],
) -> Vec<(&'a str, Option<f64>)> {
    let (mut total, mut weighted_sum, mut squared, mut absolute) = (0.0, 0.0, 0.0, 0.0);
    for ((&y, &p), &w) in truth.iter().zip(predicted).zip(weights) {
        let w = f64::from(w);
        total += w;
        weighted_sum += w * y;
        squared += w * (y - p) * (y - p);
        absolute += w * (y - p).abs();
    }
    let mean = weighted_sum / total;
    let spread: f64 = truth
        .iter()
        .zip(weights)
        .map(|(&y, &w)| f64::from(w) * (y - mean) * (y - mean))
        .sum();
    // sklearn's force_finite: a constant target scores 1 when predicted exactly, else 0.
    let r2 = match (spread == 0.0, squared == 0.0) {
        (true, true) => 1.0,
        (true, false) => 0.0,
        (false, _) => 1.0 - squared / spread,
    };
    vec![
        ("rmse", Some((squared / total).sqrt())),
        ("mae", Some(absolute / total)),
        ("r2", Some(r2)),
    ]
}

/// sklearn's `zero_division=0`: an empty denominator scores 0.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

impl Classified {
    fn new(
        plan: &TaskPlan,
        predictions: &Predictions,
        truth: &LabelColumn,
    ) -> Result<Classified, MetricError> {
        let scores = &predictions.scores;
        let classes = class_order(plan, predictions, truth)?;
        let listed = || list(&classes);
        let unknown = |label| MetricError::UnknownClass {
            label,
            classes: listed(),
        };
        let binary = classes.len() <= 2 && scores.columns <= 2;
        let positive = if binary {
            positive_class(plan, &classes)?
        } else {
            None
        };
        let truth = truth.positions_in(&classes).map_err(unknown)?;
        let predicted = if predictions.label_output.is_some() {
            predictions.labels.positions_in(&classes).map_err(unknown)?
        } else {
            argmax(scores, positive)
        };
        let scores = (scores.columns > 0).then(|| prepare_scores(scores, &classes, positive));
        Ok(Classified {
            classes,
            truth,
            predicted,
            positive,
            binary,
            scores,
        })
    }
}

fn list(labels: &[Label]) -> String {
    let parts: Vec<String> = labels.iter().map(|l| format!("'{l}'")).collect();
    parts.join(", ")
}

/// The explicit classes, else every label seen in the truth and the predictions, sorted as
/// sklearn sorts `classes_` (its score columns follow that order).
fn class_order(
    plan: &TaskPlan,
    predictions: &Predictions,
    truth: &LabelColumn,
) -> Result<Vec<Label>, MetricError> {
    let columns = predictions.scores.columns;
    let classes = match &plan.classes {
        Some(classes) => classes.clone(),
        None => {
            let mut seen: Vec<Label> = truth
                .distinct()
                .iter()
                .chain(predictions.labels.distinct())
                .cloned()
                .collect();
            seen.sort();
            seen.dedup();
            seen
        }
    };
    let fits = columns == 0 || (columns == 1 && classes.len() <= 2) || columns == classes.len();
    if !fits {
        return Err(MetricError::ClassesUnknown {
            found: classes.len(),
            classes: list(&classes),
            columns,
        });
    }
    Ok(classes)
}

/// The explicit positive class, else `1`, else the second class (sklearn's `predict_proba[:,
/// 1]`); `None` when it is not among the classes seen, so it is never true nor predicted.
fn positive_class(plan: &TaskPlan, classes: &[Label]) -> Result<Option<u32>, MetricError> {
    let position = |label: &Label| classes.iter().position(|c| c == label).map(|p| p as u32);
    match &plan.positive_class {
        Some(label) if classes.len() == 2 => {
            position(label)
                .map(Some)
                .ok_or_else(|| MetricError::UnknownClass {
                    label: label.clone(),
                    classes: list(classes),
                })
        }
        Some(label) => Ok(position(label)),
        None => Ok(position(&Label::Int(1)).or((classes.len() == 2).then_some(1))),
    }
}

/// Predicted classes from scores alone: the highest column (the first on ties), or for one
/// positive-class score, the positive class above 0.5.
fn argmax(scores: &Scores, positive: Option<u32>) -> Vec<u32> {
    if scores.columns == 1 {
        let positive = positive.unwrap_or(1);
        return scores
            .values
            .iter()
            .map(|&p| if p > 0.5 { positive } else { 1 - positive })
            .collect();
    }
    scores
        .values
        .chunks(scores.columns)
        .map(|row| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |best, (i, &s)| {
                    if s > best.1 { (i, s) } else { best }
                });
            best.0 as u32
        })
        .collect()
}

fn prepare_scores(scores: &Scores, classes: &[Label], positive: Option<u32>) -> ScoreTable {
    let columns = scores.columns;
    let curve = |class: u32, column: usize| {
        let mut order: Vec<u32> = (0..(scores.values.len() / columns) as u32).collect();
        let score = |row: u32| scores.values[row as usize * columns + column];
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        Curve {
            class,
            column,
            order,
        }
    };
    let curves = match (columns, positive) {
        (1, Some(p)) => vec![curve(p, 0)],
        (2, Some(p)) if classes.len() == 2 => vec![curve(p, p as usize)],
        (c, _) if c > 2 => (0..c).map(|k| curve(k as u32, k)).collect(),
        _ => Vec::new(),
    };
    ScoreTable {
        probabilities: scores.values.iter().all(|p| (0.0..=1.0).contains(p)),
        scores: scores.clone(),
        curves,
    }
}

impl Classified {
    fn metrics(&self, weights: &[u32]) -> Vec<(&'static str, Option<f64>)> {
        let confusion = self.confusion(weights);
        let mut named = vec![("accuracy", Some(confusion.accuracy()))];
        let (precision, recall, f1) = match (self.binary, self.positive) {
            (true, Some(positive)) => confusion.class_scores(positive as usize),
            (true, None) => (0.0, 0.0, 0.0),
            (false, _) => confusion.macro_scores(),
        };
        named.extend([
            ("precision", Some(precision)),
            ("recall", Some(recall)),
            ("f1", Some(f1)),
        ]);
        if let Some(scores) = &self.scores {
            named.push(("roc_auc", self.roc_auc(scores, weights)));
            if scores.probabilities {
                named.push(("log_loss", Some(self.log_loss(&scores.scores, weights))));
            }
        }
        named
    }

    fn confusion(&self, weights: &[u32]) -> Confusion {
        let size = self.classes.len();
        let mut counts = vec![0.0; size * size];
        for ((&t, &p), &w) in self.truth.iter().zip(&self.predicted).zip(weights) {
            counts[t as usize * size + p as usize] += f64::from(w);
        }
        Confusion { size, counts }
    }

    /// The mean over curves: one for binary, every class one-vs-rest (macro) otherwise.
    fn roc_auc(&self, scores: &ScoreTable, weights: &[u32]) -> Option<f64> {
        if scores.curves.is_empty() {
            return None;
        }
        let mut total = 0.0;
        for curve in &scores.curves {
            total += self.curve_auc(curve, &scores.scores, weights)?;
        }
        Some(total / scores.curves.len() as f64)
    }

    /// The trapezoidal area under the ROC curve, one point per distinct score as sklearn's
    /// `roc_curve` (tied scores move true and false positives together, a diagonal step).
    fn curve_auc(&self, curve: &Curve, scores: &Scores, weights: &[u32]) -> Option<f64> {
        let score = |row: u32| scores.values[row as usize * scores.columns + curve.column];
        let (mut tp, mut fp, mut area) = (0.0, 0.0, 0.0);
        let mut rows = curve.order.iter().peekable();
        while let Some(&row) = rows.next() {
            let (before_tp, before_fp) = (tp, fp);
            let threshold = score(row);
            let mut add = |row: u32| {
                let w = f64::from(weights[row as usize]);
                if self.truth[row as usize] == curve.class {
                    tp += w;
                } else {
                    fp += w;
                }
            };
            add(row);
            while let Some(&&next) = rows.peek() {
                if score(next) != threshold {
                    break;
                }
                add(next);
                rows.next();
            }
            area += (fp - before_fp) * (tp + before_tp) / 2.0;
        }
        (tp > 0.0 && fp > 0.0).then(|| area / (tp * fp))
    }

    /// Mean negative log-probability of the true class, clipped to `[eps, 1 - eps]` as sklearn
    /// 1.9 does (it no longer renormalises rows; one score column means `[1 - p, p]`).
    fn log_loss(&self, scores: &Scores, weights: &[u32]) -> f64 {
        let eps = scores.eps;
        let positive = self.positive.unwrap_or(1);
        let (mut total, mut loss) = (0.0, 0.0);
        for (row, (&t, &w)) in self.truth.iter().zip(weights).enumerate() {
            if w == 0 {
                continue;
            }
            let p = if scores.columns == 1 {
                let p = scores.values[row];
                if t == positive { p } else { 1.0 - p }
            } else {
                scores.values[row * scores.columns + t as usize]
            };
            total += f64::from(w);
            loss -= f64::from(w) * p.clamp(eps, 1.0 - eps).ln();
        }
        loss / total
    }
}

/// Weighted counts, `counts[truth * size + predicted]`.
struct Confusion {
    size: usize,
    counts: Vec<f64>,
}

impl Confusion {
    fn accuracy(&self) -> f64 {
        let correct: f64 = (0..self.size).map(|k| self.counts[k * self.size + k]).sum();
        correct / self.counts.iter().sum::<f64>()
    }

    /// True positives, rows truly `class`, rows predicted `class`.
    fn tallies(&self, class: usize) -> (f64, f64, f64) {
        let row = &self.counts[class * self.size..(class + 1) * self.size];
        let predicted = (0..self.size)
            .map(|t| self.counts[t * self.size + class])
            .sum();
        (
            self.counts[class * self.size + class],
            row.iter().sum(),
            predicted,
        )
    }

    fn class_scores(&self, class: usize) -> (f64, f64, f64) {
        let (tp, truly, predicted) = self.tallies(class);
        (
            ratio(tp, predicted),
            ratio(tp, truly),
            ratio(2.0 * tp, truly + predicted),
        )
    }

    /// The unweighted mean over the classes present in truth or predictions, as sklearn's
    /// `average="macro"` over `unique_labels(y_true, y_pred)`.
    fn macro_scores(&self) -> (f64, f64, f64) {
        let present: Vec<usize> = (0..self.size)
            .filter(|&k| {
                let (_, truly, predicted) = self.tallies(k);
                truly + predicted > 0.0
            })
            .collect();
        let sums = present.iter().fold((0.0, 0.0, 0.0), |acc, &k| {
            let (p, r, f) = self.class_scores(k);
            (acc.0 + p, acc.1 + r, acc.2 + f)
        });
        let n = present.len() as f64;
        (sums.0 / n, sums.1 / n, sums.2 / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::task::Inferred;

    fn plan(task: Task, label: Option<&str>, score: Option<&str>) -> TaskPlan {
        TaskPlan {
            task,
            label_output: label.map(str::to_owned),
            score_output: score.map(str::to_owned),
            classes: None,
            positive_class: None,
            outputs: Vec::new(),
            inferred: Inferred::default(),
        }
    }

    /// Rows 0..n with labels, positive-class scores and truth, each repeated `repeat[i]` times.
    fn classifier(truth: &[f64], positive: &[f32], repeat: &[usize]) -> Evaluation {
        let plan = plan(Task::Classification, Some("label"), Some("scores"));
        let rows: Vec<usize> = (0..truth.len()).flat_map(|i| vec![i; repeat[i]]).collect();
        let labels: Vec<i64> = rows.iter().map(|&i| i64::from(positive[i] > 0.5)).collect();
        let scores: Vec<f32> = rows
            .iter()
            .flat_map(|&i| [1.0 - positive[i], positive[i]])
            .collect();
        let mut predictions = Predictions::new(&plan);
        let outputs = [
            Tensor::new(vec![rows.len()], TensorData::Int64(labels)).unwrap(),
            Tensor::new(vec![rows.len(), 2], TensorData::Fp32(scores)).unwrap(),
        ];
        predictions.push(&outputs).unwrap();
        let mut target = Truth::new(Task::Classification);
        target
            .push(Target::Numeric(rows.iter().map(|&i| truth[i]).collect()))
            .unwrap();
        Evaluation::new(&plan, &predictions, &target).unwrap()
    }

    #[test]
    fn weights_equal_repeated_rows() {
        let truth = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        let positive = [0.2, 0.4, 0.9, 0.4, 0.6, 0.7];
        let repeat = [2, 0, 3, 1, 1, 4];
        let weights: Vec<u32> = repeat.iter().map(|&r| r as u32).collect();
        let weighted = classifier(&truth, &positive, &[1; 6]).metrics_weighted(&weights);
        let repeated = classifier(&truth, &positive, &repeat).metrics();
        assert_eq!(
            weighted.keys().collect::<Vec<_>>(),
            repeated.keys().collect::<Vec<_>>()
        );
        for (name, value) in &repeated {
            assert!((weighted[name] - value).abs() < 1e-12, "{name}");
        }
    }

    #[test]
    fn auc_is_left_out_when_one_class_is_present() {
        let metrics = classifier(&[1.0, 1.0], &[0.3, 0.8], &[1, 1]).metrics();
        assert!(!metrics.contains_key("roc_auc"));
        assert_eq!(metrics["accuracy"], 0.5);
    }

    #[test]
    fn mismatched_rows_and_non_labels_are_errors() {
        let plan = plan(Task::Classification, Some("label"), None);
        let mut predictions = Predictions::new(&plan);
        let labels = Tensor::new(vec![2], TensorData::Int64(vec![0, 1])).unwrap();
        predictions.push(&[labels]).unwrap();
        let mut truth = Truth::new(Task::Classification);
        assert_eq!(
            truth.push(Target::Numeric(vec![0.5])),
            Err(MetricError::NotALabel { value: 0.5 })
        );
        truth.push(Target::Numeric(vec![1.0])).unwrap();
        let err = Evaluation::new(&plan, &predictions, &truth).unwrap_err();
        assert_eq!(
            err,
            MetricError::RowMismatch {
                truth: 1,
                predicted: 2
            }
        );
    }
}
