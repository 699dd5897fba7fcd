//! Computing a profile from batches, in one pass and bounded memory: exact counts (rows,
//! missing values, range, categories up to a cap) and a uniform sample of rows (reservoir
//! sampling, seeded) from which the quantile bins and their fractions come. Data of no more rows
//! than the sample holds is described exactly.

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::format::{
    Bins, Categories, FeatureKind, FeatureProfile, PredictionKind, PredictionProfile, Share,
};
use crate::{
    eval::{Task, TaskPlan},
    model::{DataType, Signature, Tensor},
};

/// Distinct categories counted per feature; later ones count as "other".
const MAX_DISTINCT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Quantile bins per numeric feature or score.
    pub(crate) bins: usize,
    /// Categories listed per categorical feature; the rest are "other".
    pub(crate) max_categories: usize,
    /// Rows kept in the sample the bins are computed from.
    pub(crate) sample_rows: usize,
    pub(crate) seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("output '{output}': {reason}")]
    Output { output: String, reason: String },
}

/// Algorithm R over rows: which slot of the sample, if any, the next row takes.
struct Reservoir {
    capacity: usize,
    seen: u64,
    rng: ChaCha8Rng,
}

impl Reservoir {
    fn new(settings: &Settings) -> Reservoir {
        Reservoir {
            capacity: settings.sample_rows.max(1),
            seen: 0,
            rng: ChaCha8Rng::seed_from_u64(settings.seed),
        }
    }

    fn next_slot(&mut self) -> Option<usize> {
        let row = self.seen;
        self.seen += 1;
        if row < self.capacity as u64 {
            return Some(row as usize);
        }
        let pick = self.rng.random_range(0..=row);
        (pick < self.capacity as u64).then_some(pick as usize)
    }
}

/// Counts and the sample of one numeric column.
#[derive(Default)]
struct Numbers {
    missing: u64,
    /// The smallest and largest value seen, once one has been.
    range: Option<(f64, f64)>,
    /// Indexed by sample slot; NaN for a missing value.
    sample: Vec<f64>,
}

impl Numbers {
    fn observe(&mut self, value: f64, slot: Option<usize>) {
        if value.is_nan() {
            self.missing += 1;
        } else {
            let (min, max) = self.range.get_or_insert((value, value));
            *min = min.min(value);
            *max = max.max(value);
        }
        match slot {
            Some(slot) if slot == self.sample.len() => self.sample.push(value),
            Some(slot) => self.sample[slot] = value,
            None => {}
        }
    }

    /// Quantile bins of the sample's values (numpy's default, linear interpolation), with
    /// repeated edges merged and none at or below the minimum, and the sample's fractions.
    fn bins(&self, bins: usize) -> Bins {
        // A column with no value at all has no range and no fractions.
        let (min, max) = self.range.unwrap_or_default();
        let mut values: Vec<f64> = self
            .sample
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        values.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::new();
        if !values.is_empty() {
            for i in 1..bins {
                let edge = quantile(&values, i as f64 / bins as f64);
                if edge > min && edges.last().is_none_or(|last| edge > *last) {
                    edges.push(edge);
                }
            }
        }
        let mut counts = vec![0u64; edges.len() + 1];
        for value in &values {
            counts[edges.partition_point(|edge| edge <= value)] += 1;
        }
        let total = values.len() as f64;
        Bins {
            fractions: counts
                .iter()
                .map(|&c| if total > 0.0 { c as f64 / total } else { 0.0 })
                .collect(),
            edges,
            min,
            max,
        }
    }
}

/// The `q` quantile of sorted, non-empty `values`, interpolated linearly between the two
/// nearest ranks (numpy's `quantile` default).
fn quantile(values: &[f64], q: f64) -> f64 {
    let position = (values.len() - 1) as f64 * q;
    let below = position.floor() as usize;
    let above = (below + 1).min(values.len() - 1);
    values[below] + (position - below as f64) * (values[above] - values[below])
}

/// Exact counts of one categorical column, up to [`MAX_DISTINCT`] categories.
#[derive(Default)]
struct Counts {
    missing: u64,
    counts: HashMap<String, u64>,
    overflow: u64,
}

impl Counts {
    fn observe(&mut self, value: &str) {
        if value.is_empty() {
            self.missing += 1;
        } else if let Some(count) = self.counts.get_mut(value) {
            *count += 1;
        } else if self.counts.len() < MAX_DISTINCT {
            self.counts.insert(value.to_owned(), 1);
        } else {
            self.overflow += 1;
        }
    }

    /// The `top` most frequent categories (ties by value) and the share of the rest, among the
    /// values that are not missing.
    fn categories(&self, top: usize) -> Categories {
        let mut ranked: Vec<(&String, &u64)> = self.counts.iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let present = (self.counts.values().sum::<u64>() + self.overflow).max(1) as f64;
        let listed: Vec<Share> = ranked
            .iter()
            .take(top)
            .map(|&(value, &count)| Share {
                value: value.clone(),
                fraction: count as f64 / present,
            })
            .collect();
        let listed_count: u64 = ranked.iter().take(top).map(|&(_, &count)| count).sum();
        let other = self.counts.values().sum::<u64>() - listed_count + self.overflow;
        Categories {
            top: listed,
            other: if self.counts.is_empty() && self.overflow == 0 {
                0.0
            } else {
                other as f64 / present
            },
        }
    }
}

enum Column {
    Numeric(Numbers),
    Categorical(Counts),
}

/// Where a feature's values are: input `input` (signature order), column `index` of `width`.
struct Feature {
    name: String,
    input_name: String,
    input: usize,
    index: usize,
    width: usize,
    column: Column,
}

/// The features' statistics, fed one batch of model inputs at a time.
pub(crate) struct FeatureStats {
    features: Vec<Feature>,
    reservoir: Reservoir,
    settings: Settings,
}

impl FeatureStats {
    /// One feature per column of `columns` (each input's column names, in signature order, as
    /// the data maps them).
    pub(crate) fn new(
        signature: &Signature,
        columns: &[(&str, &[String])],
        settings: Settings,
    ) -> FeatureStats {
        let mut features = Vec::new();
        for (input, spec) in signature.inputs.iter().enumerate() {
            let names = columns
                .iter()
                .find(|(name, _)| *name == spec.name)
                .map_or(&[][..], |(_, names)| *names);
            for (index, name) in names.iter().enumerate() {
                features.push(Feature {
                    name: name.clone(),
                    input_name: spec.name.clone(),
                    input,
                    index,
                    width: names.len(),
                    column: if spec.datatype == DataType::Bytes {
                        Column::Categorical(Counts::default())
                    } else {
                        Column::Numeric(Numbers::default())
                    },
                });
            }
        }
        FeatureStats {
            features,
            reservoir: Reservoir::new(&settings),
            settings,
        }
    }

    /// Counts one batch of inputs, bound in signature order.
    pub(crate) fn observe(&mut self, inputs: &[Tensor]) {
        let rows = inputs
            .first()
            .and_then(|t| t.shape().first())
            .copied()
            .unwrap_or(0);
        for row in 0..rows {
            let slot = self.reservoir.next_slot();
            for feature in &mut self.features {
                let data = inputs[feature.input].data();
                let at = row * feature.width + feature.index;
                match &mut feature.column {
                    Column::Numeric(numbers) => {
                        numbers.observe(data.number_at(at).unwrap_or(f64::NAN), slot);
                    }
                    Column::Categorical(counts) => counts.observe(data.text_at(at).unwrap_or("")),
                }
            }
        }
    }

    /// Rows seen, and rows the sample holds.
    pub(crate) fn rows(&self) -> (u64, u64) {
        let seen = self.reservoir.seen;
        (seen, seen.min(self.reservoir.capacity as u64))
    }

    pub(crate) fn finish(self) -> Vec<FeatureProfile> {
        let rows = self.reservoir.seen.max(1) as f64;
        self.features
            .into_iter()
            .map(|feature| {
                let (kind, missing, bins, categories) = match &feature.column {
                    Column::Numeric(numbers) => (
                        FeatureKind::Numeric,
                        numbers.missing,
                        Some(numbers.bins(self.settings.bins)),
                        None,
                    ),
                    Column::Categorical(counts) => (
                        FeatureKind::Categorical,
                        counts.missing,
                        None,
                        Some(counts.categories(self.settings.max_categories)),
                    ),
                };
                FeatureProfile {
                    name: feature.name,
                    input: feature.input_name,
                    index: feature.index,
                    kind,
                    missing_rate: missing as f64 / rows,
                    bins,
                    categories,
                }
            })
            .collect()
    }
}

/// What the model predicted: class counts from a label output, a sampled score from a score
/// output (a regressor's value, a binary classifier's positive-class column).
pub(crate) struct PredictionStats {
    label: Option<String>,
    score: Option<String>,
    classes: BTreeMap<String, u64>,
    /// The score column, once the first answer shows the scores' width; `None` after a
    /// multiclass answer (its classes say enough).
    column: Option<Option<usize>>,
    scores: Numbers,
    reservoir: Reservoir,
    settings: Settings,
}

impl PredictionStats {
    pub(crate) fn new(plan: &TaskPlan, settings: Settings) -> PredictionStats {
        PredictionStats {
            label: plan.label_output.clone(),
            score: plan.score_output.clone(),
            classes: BTreeMap::new(),
            column: None,
            scores: Numbers::default(),
            reservoir: Reservoir::new(&settings),
            settings,
        }
    }

    /// Counts one answer: the plan's outputs, label first.
    pub(crate) fn observe(&mut self, outputs: &[Tensor]) -> Result<(), BuildError> {
        let mut outputs = outputs.iter();
        if let Some(name) = &self.label {
            let labels = outputs.next().ok_or_else(|| missing(name))?;
            for row in 0..labels.data().len() {
                let label = match labels.data().text_at(row) {
                    Some(text) => text.to_owned(),
                    None => label_text(labels.data().number_at(row).unwrap_or(f64::NAN)),
                };
                *self.classes.entry(label).or_default() += 1;
            }
        }
        if let Some(name) = self.score.clone() {
            let scores = outputs.next().ok_or_else(|| missing(&name))?;
            self.observe_scores(&name, scores)?;
        }
        Ok(())
    }

    fn observe_scores(&mut self, name: &str, scores: &Tensor) -> Result<(), BuildError> {
        let (rows, width) = match scores.shape() {
            [rows] => (*rows, 1),
            [rows, width] => (*rows, *width),
            shape => {
                return Err(BuildError::Output {
                    output: name.to_owned(),
                    reason: format!("scores of shape {shape:?}, not [N] or [N, C]"),
                });
            }
        };
        let column = *self.column.get_or_insert(match width {
            1 => Some(0),
            2 => Some(1),
            _ => None,
        });
        let Some(column) = column else {
            return Ok(());
        };
        for row in 0..rows {
            let slot = self.reservoir.next_slot();
            let value = scores
                .data()
                .number_at(row * width + column)
                .unwrap_or(f64::NAN);
            self.scores.observe(value, slot);
        }
        Ok(())
    }

    pub(crate) fn finish(self, task: Task) -> Vec<PredictionProfile> {
        let mut profiles = Vec::new();
        if let Some(output) = &self.label {
            let total = self.classes.values().sum::<u64>().max(1) as f64;
            profiles.push(PredictionProfile {
                output: output.clone(),
                kind: PredictionKind::Classes,
                column: None,
                classes: Some(
                    self.classes
                        .iter()
                        .map(|(value, &count)| Share {
                            value: value.clone(),
                            fraction: count as f64 / total,
                        })
                        .collect(),
                ),
                bins: None,
            });
        }
        if let (Some(output), Some(Some(column))) = (&self.score, self.column) {
            profiles.push(PredictionProfile {
                output: output.clone(),
                kind: PredictionKind::Scores,
                column: (task == Task::Classification).then_some(column),
                classes: None,
                bins: Some(self.scores.bins(self.settings.bins)),
            });
        }
        profiles
    }
}

fn missing(output: &str) -> BuildError {
    BuildError::Output {
        output: output.to_owned(),
        reason: "the model did not answer it".to_owned(),
    }
}

/// A numeric class label as the protocol prints it: integers without a fraction.
pub(crate) fn label_text(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TensorData;

    fn settings(bins: usize, sample_rows: usize) -> Settings {
        Settings {
            bins,
            max_categories: 2,
            sample_rows,
            seed: 0,
        }
    }

    fn numbers(values: &[f64], sample_rows: usize) -> Numbers {
        let mut reservoir = Reservoir::new(&settings(4, sample_rows));
        let mut numbers = Numbers::default();
        for &value in values {
            numbers.observe(value, reservoir.next_slot());
        }
        numbers
    }

    #[test]
    fn quantile_interpolates_between_ranks_as_numpy_does() {
        let values = [1.0, 2.0, 3.0, 4.0, 10.0];
        // numpy.quantile([1, 2, 3, 4, 10], [0.25, 0.5, 0.9]) == [2.0, 3.0, 7.6]
        assert_eq!(quantile(&values, 0.25), 2.0);
        assert_eq!(quantile(&values, 0.5), 3.0);
        assert!((quantile(&values, 0.9) - 7.6).abs() < 1e-12);
    }

    #[test]
    fn bins_merge_repeated_edges_and_count_missing_apart() {
        let values = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, f64::NAN, f64::NAN];
        let numbers = numbers(&values, 100);
        assert_eq!(numbers.missing, 2);
        let bins = numbers.bins(4);
        // numpy.quantile of five 0s and three 1s at 0.25, 0.5, 0.75 is 0, 0, 1: the 0s are the
        // minimum, so one edge is left.
        assert_eq!(bins.edges, vec![1.0]);
        assert_eq!(bins.fractions, vec![5.0 / 8.0, 3.0 / 8.0]);
        assert_eq!((bins.min, bins.max), (0.0, 1.0));
    }

    #[test]
    fn the_first_value_sets_the_range_after_missing_ones() {
        let numbers = numbers(&[f64::NAN, -3.0, -1.0, -2.0], 10);
        assert_eq!(numbers.range, Some((-3.0, -1.0)));
    }

    #[test]
    fn the_sample_is_uniform_and_bounded() {
        let values: Vec<f64> = (0..100_000).map(f64::from).collect();
        let numbers = numbers(&values, 1000);
        assert_eq!(numbers.sample.len(), 1000);
        let mean = numbers.sample.iter().sum::<f64>() / 1000.0;
        // Uniform over 0..100000: mean 50000, standard error about 913.
        assert!((mean - 50_000.0).abs() < 4_000.0, "{mean}");
        assert_eq!(numbers.range, Some((0.0, 99_999.0)));
    }

    #[test]
    fn categories_keep_the_most_frequent_and_sum_the_rest() {
        let mut counts = Counts::default();
        for value in ["b", "a", "a", "c", "b", "a", "", "d"] {
            counts.observe(value);
        }
        assert_eq!(counts.missing, 1);
        let categories = counts.categories(2);
        let top: Vec<(&str, f64)> = categories
            .top
            .iter()
            .map(|share| (share.value.as_str(), share.fraction))
            .collect();
        assert_eq!(top, [("a", 3.0 / 7.0), ("b", 2.0 / 7.0)]);
        assert!((categories.other - 2.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn features_are_read_from_their_input_column() {
        let signature = Signature {
            inputs: vec![
                crate::model::TensorSpec::new(
                    "x",
                    DataType::Fp32,
                    vec![
                        crate::model::Dim::Dynamic(None),
                        crate::model::Dim::Fixed(2),
                    ],
                ),
                crate::model::TensorSpec::new(
                    "plan",
                    DataType::Bytes,
                    vec![crate::model::Dim::Dynamic(None)],
                ),
            ],
            outputs: Vec::new(),
        };
        let names = [
            vec!["a".to_owned(), "b".to_owned()],
            vec!["plan".to_owned()],
        ];
        let columns = [("x", names[0].as_slice()), ("plan", names[1].as_slice())];
        let mut stats = FeatureStats::new(&signature, &columns, settings(2, 10));
        let inputs = [
            Tensor::new(
                vec![3, 2],
                TensorData::Fp32(vec![1.0, 10.0, 2.0, 20.0, 3.0, f32::NAN]),
            )
            .unwrap(),
            Tensor::new(
                vec![3],
                TensorData::Bytes(vec!["x".into(), "y".into(), "x".into()]),
            )
            .unwrap(),
        ];
        stats.observe(&inputs);
        assert_eq!(stats.rows(), (3, 3));
        let features = stats.finish();
        let a = features[0].bins.as_ref().unwrap();
        assert_eq!((a.min, a.max), (1.0, 3.0));
        assert_eq!((features[1].name.as_str(), features[1].index), ("b", 1));
        assert!((features[1].missing_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(features[1].bins.as_ref().unwrap().max, 20.0);
        assert_eq!(features[2].kind, FeatureKind::Categorical);
        assert_eq!(features[2].categories.as_ref().unwrap().top[0].value, "x");
    }
}
