//! Drift monitoring inside the serving process: every scored batch (or a sampled share of its
//! rows) is compared with the model's reference profile ([`crate::profile`]) and the result is
//! exported to Prometheus, so no raw feature leaves the pod and no detector service is needed.
//!
//! The batch workers hand each batch over after its requests are answered ([`Observer`]); a
//! thread of its own bins the rows, keeps the last `--drift-window` rows' bins (at most
//! `--drift-window-seconds` old) in a window, and sets each feature's and each
//! prediction output's PSI against the profile. A batch that finds that thread behind is
//! skipped and counted, never waited for.

mod psi;
mod window;

use std::{
    collections::HashMap,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    time::Duration,
};

use metrics::{Counter, Gauge};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use self::window::{NO_BIN, Window};
use crate::{
    batch::{Observer, ScoredBatch},
    metrics::{FeatureMetrics, ModelLabels, PredictionBins, PredictionMetrics},
    model::{Signature, Tensor, TensorData},
    profile::{
        ReferenceProfile,
        build::label_text,
        format::{
            Bins, Categories, FeatureKind, FeatureProfile, PredictionKind, PredictionProfile,
        },
    },
};

/// How drift is computed (`serve`'s `--drift-*` flags).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DriftConfig {
    /// Share of scored rows that are binned.
    pub(crate) sample_rate: f64,
    /// Rows the PSI is computed over, at most.
    pub(crate) window_rows: usize,
    /// How old those rows may be.
    pub(crate) window_age: Duration,
    /// Features binned, with series of their own; the rest are only counted together.
    pub(crate) max_features: usize,
}

/// Batches waiting for the drift thread; a batch beyond them is skipped.
const QUEUE_BATCHES: usize = 64;

/// The `feature` label of the counts of features beyond `--drift-max-features`, together.
pub(crate) const REST: &str = "(rest)";

/// The workers' side: hands batches to the drift thread without waiting.
pub(crate) struct Monitor {
    sender: SyncSender<ScoredBatch>,
    outputs: Vec<usize>,
    skipped: Counter,
}

impl Observer for Monitor {
    fn outputs(&self) -> &[usize] {
        &self.outputs
    }

    fn observe(&self, batch: ScoredBatch) {
        if self.sender.try_send(batch).is_err() {
            self.skipped.increment(1);
        }
    }
}

impl Monitor {
    /// Starts the drift thread for a model whose `profile` has been checked against its
    /// `signature`. The thread ends when the monitor is dropped.
    pub(crate) fn start(
        profile: &ReferenceProfile,
        signature: &Signature,
        labels: &ModelLabels,
        config: DriftConfig,
    ) -> std::io::Result<Monitor> {
        let tracker = Tracker::new(profile, signature, labels, config);
        let outputs = tracker.predictions.iter().map(|p| p.output).collect();
        let (sender, receiver) = sync_channel(QUEUE_BATCHES);
        std::thread::Builder::new()
            .name("pinserve-drift".to_owned())
            .spawn(move || tracker.run(receiver))?;
        Ok(Monitor {
            sender,
            outputs,
            skipped: labels.drift_skipped(),
        })
    }
}

/// How one feature's or output's values become bin indices.
enum Binner {
    Numeric(Bins),
    /// Each listed category's bin; anything else falls in the last bin, "other".
    Categorical(HashMap<String, u16>),
}

impl Binner {
    /// A bin per listed value (the profile's check bounds how many), then "other".
    fn categorical<'a>(values: impl Iterator<Item = &'a str>) -> Binner {
        let index = values
            .enumerate()
            .map(|(bin, value)| (value.to_owned(), bin as u16))
            .collect();
        Binner::Categorical(index)
    }

    fn bins(&self) -> usize {
        match self {
            Binner::Numeric(bins) => bins.fractions.len(),
            Binner::Categorical(index) => index.len() + 1,
        }
    }

    fn bin(&self, data: &TensorData, at: usize) -> Seen {
        match self {
            Binner::Numeric(bins) => bin_number(bins, data.number_at(at).unwrap_or(f64::NAN)),
            Binner::Categorical(index) => {
                let text = match data.text_at(at) {
                    Some(text) => std::borrow::Cow::Borrowed(text),
                    None => match data.number_at(at) {
                        Some(number) if !number.is_nan() => label_text(number).into(),
                        _ => "".into(),
                    },
                };
                if text.is_empty() {
                    return Seen::Missing;
                }
                match index.get(text.as_ref()) {
                    Some(&bin) => Seen::Bin(bin, false),
                    None => Seen::Bin(index.len() as u16, true),
                }
            }
        }
    }
}

fn bin_number(bins: &Bins, value: f64) -> Seen {
    match bins.bin_of(value) {
        None => Seen::Missing,
        Some(bin) => Seen::Bin(bin as u16, value < bins.min || value > bins.max),
    }
}

/// One value of a row, as the profile sees it.
enum Seen {
    Missing,
    /// Its bin, and whether it fell outside what the reference saw (beyond its range, or a
    /// category it did not list).
    Bin(u16, bool),
}

/// The reference side of one column: its shares and the rows they came from.
struct Reference {
    fractions: Vec<f64>,
    rows: f64,
}

struct FeatureTracker {
    input: usize,
    index: usize,
    binner: Binner,
    reference: Reference,
    metrics: FeatureMetrics,
}

struct PredictionTracker {
    /// Signature index of the output.
    output: usize,
    /// For scores of shape [N, C]: the column binned.
    column: usize,
    binner: Binner,
    reference: Reference,
    metrics: PredictionMetrics,
}

/// The drift thread's state.
struct Tracker {
    /// The first `--drift-max-features` features: binned, with series of their own.
    features: Vec<FeatureTracker>,
    features_window: Window,
    /// The rest: only checked for missing, out-of-range and unseen values, counted together.
    summarised: Vec<FeatureTracker>,
    predictions: Vec<PredictionTracker>,
    predictions_window: Window,
    rows_seen: Counter,
    window_rows: Gauge,
    sample_rate: f64,
    rng: ChaCha8Rng,
}

fn categories(categories: &Categories) -> impl Iterator<Item = &str> {
    categories.top.iter().map(|share| share.value.as_str())
}

impl Tracker {
    fn new(
        profile: &ReferenceProfile,
        signature: &Signature,
        labels: &ModelLabels,
        config: DriftConfig,
    ) -> Tracker {
        let rows = profile.dataset.sampled_rows as f64;
        let summarised = profile.features.len() > config.max_features;
        if summarised {
            let rest: Vec<&str> = profile.features[config.max_features..]
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            tracing::info!(
                exported = config.max_features,
                summarised = rest.len(),
                first = rest.first().copied().unwrap_or_default(),
                "drift: features beyond --drift-max-features get no PSI; their missing, out-of-range and unseen values are counted as feature=\"(rest)\""
            );
        }
        let rest_metrics = summarised.then(|| labels.feature_metrics(REST, false));
        let (features, summarised): (Vec<_>, Vec<_>) = profile
            .features
            .iter()
            .enumerate()
            .filter_map(|(position, feature)| {
                let exported = position < config.max_features;
                let metrics = if exported {
                    labels.feature_metrics(&feature.name, true)
                } else {
                    rest_metrics.clone()?
                };
                Some(FeatureTracker {
                    input: signature
                        .inputs
                        .iter()
                        .position(|i| i.name == feature.input)?,
                    index: feature.index,
                    binner: feature_binner(feature),
                    reference: Reference {
                        fractions: feature_fractions(feature),
                        rows: rows * (1.0 - feature.missing_rate),
                    },
                    metrics,
                })
                .map(|tracker| (exported, tracker))
            })
            .partition(|(exported, _)| *exported);
        let features: Vec<FeatureTracker> = features.into_iter().map(|(_, f)| f).collect();
        let summarised = summarised.into_iter().map(|(_, f)| f).collect();
        let predictions: Vec<PredictionTracker> = profile
            .predictions
            .iter()
            .filter_map(|prediction| {
                Some(PredictionTracker {
                    output: signature
                        .outputs
                        .iter()
                        .position(|o| o.name == prediction.output)?,
                    column: prediction.column.unwrap_or(0),
                    binner: prediction_binner(prediction),
                    reference: Reference {
                        fractions: prediction_fractions(prediction),
                        rows,
                    },
                    metrics: labels
                        .prediction_metrics(&prediction.output, &prediction_bins(prediction)),
                })
            })
            .collect();
        let window = |bins: Vec<usize>| Window::new(bins, config.window_rows, config.window_age);
        Tracker {
            features_window: window(features.iter().map(|f| f.binner.bins()).collect()),
            predictions_window: window(predictions.iter().map(|p| p.binner.bins()).collect()),
            features,
            summarised,
            predictions,
            rows_seen: labels.drift_rows(),
            window_rows: labels.drift_window_rows(),
            sample_rate: config.sample_rate,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }

    fn run(mut self, batches: Receiver<ScoredBatch>) {
        for batch in batches {
            self.observe(&batch, Instant::now());
        }
    }

    fn observe(&mut self, batch: &ScoredBatch, now: Instant) {
        let rows = batch
            .inputs
            .first()
            .and_then(|t| t.shape().first())
            .copied()
            .unwrap_or(0);
        let outputs: Vec<Option<&Tensor>> = self
            .predictions
            .iter()
            .map(|p| {
                batch
                    .outputs
                    .iter()
                    .find(|(index, _)| *index == p.output)
                    .map(|(_, t)| t)
            })
            .collect();
        let predicted = outputs.iter().all(Option::is_some);
        let sampled: Vec<usize> = (0..rows)
            .filter(|_| self.sample_rate >= 1.0 || self.rng.random::<f64>() < self.sample_rate)
            .collect();
        let seen = sampled.len() as u64;
        let width = self.features.len();
        let mut feature_bins = vec![NO_BIN; sampled.len() * width];
        let mut values = Vec::with_capacity(sampled.len());
        for (column, feature) in self.features.iter().enumerate() {
            feature.see(&batch.inputs, &sampled, true, &mut values, |i, bin| {
                feature_bins[i * width + column] = bin;
            });
        }
        for feature in &self.summarised {
            feature.see(&batch.inputs, &sampled, false, &mut values, |_, _| {});
        }
        let mut prediction_bins = Vec::new();
        if predicted {
            for &row in &sampled {
                for (prediction, tensor) in self.predictions.iter().zip(&outputs) {
                    let tensor = tensor.expect("checked: every output is there");
                    prediction_bins.push(prediction.see(tensor, row));
                }
            }
        }
        self.rows_seen.increment(seen);
        self.features_window.push(&feature_bins, now);
        self.predictions_window.push(&prediction_bins, now);
        self.publish();
    }

    /// Sets every PSI gauge, and the rows they stand on, from the windows as they are now.
    fn publish(&self) {
        let window = if self.features.is_empty() {
            &self.predictions_window
        } else {
            &self.features_window
        };
        self.window_rows.set(window.len() as f64);
        for (column, feature) in self.features.iter().enumerate() {
            if let (Some(value), Some(gauge)) = (
                window_psi(&self.features_window, column, &feature.reference),
                &feature.metrics.psi,
            ) {
                gauge.set(value);
            }
        }
        for (column, prediction) in self.predictions.iter().enumerate() {
            if let Some(value) = window_psi(&self.predictions_window, column, &prediction.reference)
            {
                prediction.metrics.psi.set(value);
            }
        }
    }
}

fn window_psi(window: &Window, column: usize, reference: &Reference) -> Option<f64> {
    let (counts, present) = window.counts(column);
    psi::psi(&reference.fractions, reference.rows, counts, present)
}

/// Elements per row of a tensor: 1 for [N], K for [N, K].
fn row_width(tensor: &Tensor) -> usize {
    tensor.shape().iter().skip(1).product()
}

impl FeatureTracker {
    /// Bins the feature in each of `rows` of `inputs`, handing `out` each row's position in
    /// `rows` and its bin, and counts what the reference did not see (once per batch, not per
    /// row: the counters are shared with the scrape). A numeric column is read into `values`
    /// first, so that the tensor's type is matched once per batch rather than per value. A
    /// feature that is not `binned` is only checked against the reference's range.
    fn see(
        &self,
        inputs: &[Tensor],
        rows: &[usize],
        binned: bool,
        values: &mut Vec<f64>,
        mut out: impl FnMut(usize, u16),
    ) {
        let tensor = &inputs[self.input];
        let width = row_width(tensor);
        let (mut missing, mut unseen) = (0, 0);
        let mut tally = |i: usize, seen: Seen| match seen {
            Seen::Missing => {
                missing += 1;
                out(i, NO_BIN);
            }
            Seen::Bin(bin, outside) => {
                unseen += u64::from(outside);
                out(i, bin);
            }
        };
        match &self.binner {
            Binner::Numeric(bins) => {
                values.clear();
                column(tensor.data(), rows, width, self.index, values);
                for (i, &value) in values.iter().enumerate() {
                    let seen = if binned {
                        bin_number(bins, value)
                    } else if value.is_nan() {
                        Seen::Missing
                    } else {
                        Seen::Bin(NO_BIN, value < bins.min || value > bins.max)
                    };
                    tally(i, seen);
                }
            }
            Binner::Categorical(_) => {
                for (i, &row) in rows.iter().enumerate() {
                    tally(i, self.binner.bin(tensor.data(), row * width + self.index));
                }
            }
        }
        if missing > 0 {
            self.metrics.missing.increment(missing);
        }
        if unseen > 0 {
            match self.binner {
                Binner::Numeric(_) => self.metrics.out_of_range.increment(unseen),
                Binner::Categorical(_) => self.metrics.unseen_category.increment(unseen),
            }
        }
    }
}

/// Column `index` of `rows` of a row-major tensor `width` wide, as numbers (NaN where there is
/// none), appended to `values`.
fn column(data: &TensorData, rows: &[usize], width: usize, index: usize, values: &mut Vec<f64>) {
    let at = |row: &usize| row * width + index;
    match data {
        TensorData::Fp32(v) => values.extend(
            rows.iter()
                .map(|row| v.get(at(row)).map_or(f64::NAN, |&value| f64::from(value))),
        ),
        TensorData::Fp64(v) => values.extend(
            rows.iter()
                .map(|row| v.get(at(row)).copied().unwrap_or(f64::NAN)),
        ),
        other => values.extend(
            rows.iter()
                .map(|row| other.number_at(at(row)).unwrap_or(f64::NAN)),
        ),
    }
}

impl PredictionTracker {
    fn see(&self, tensor: &Tensor, row: usize) -> u16 {
        let at = row * row_width(tensor) + self.column;
        match self.binner.bin(tensor.data(), at) {
            Seen::Missing => NO_BIN,
            Seen::Bin(bin, _) => {
                self.metrics
                    .count(usize::from(bin), tensor.data().number_at(at));
                bin
            }
        }
    }
}

fn feature_binner(feature: &FeatureProfile) -> Binner {
    match (feature.kind, &feature.bins, &feature.categories) {
        (FeatureKind::Numeric, Some(bins), _) => Binner::Numeric(bins.clone()),
        (_, _, Some(listed)) => Binner::categorical(categories(listed)),
        _ => Binner::categorical(std::iter::empty()),
    }
}

fn feature_fractions(feature: &FeatureProfile) -> Vec<f64> {
    match (&feature.bins, &feature.categories) {
        (Some(bins), _) => bins.fractions.clone(),
        (_, Some(listed)) => listed
            .top
            .iter()
            .map(|share| share.fraction)
            .chain([listed.other])
            .collect(),
        _ => vec![1.0],
    }
}

fn prediction_binner(prediction: &PredictionProfile) -> Binner {
    match (prediction.kind, &prediction.bins, &prediction.classes) {
        (PredictionKind::Scores, Some(bins), _) => Binner::Numeric(bins.clone()),
        (_, _, Some(classes)) => Binner::categorical(classes.iter().map(|c| c.value.as_str())),
        _ => Binner::categorical(std::iter::empty()),
    }
}

fn prediction_bins(prediction: &PredictionProfile) -> PredictionBins<'_> {
    match (&prediction.bins, &prediction.classes) {
        (Some(bins), _) => PredictionBins::Scores(&bins.edges),
        (_, Some(classes)) => {
            PredictionBins::Classes(classes.iter().map(|c| c.value.as_str()).collect())
        }
        _ => PredictionBins::Classes(Vec::new()),
    }
}

fn prediction_fractions(prediction: &PredictionProfile) -> Vec<f64> {
    match (&prediction.bins, &prediction.classes) {
        (Some(bins), _) => bins.fractions.clone(),
        // A class the reference never saw has the "other" bin, with no reference share.
        (_, Some(classes)) => classes.iter().map(|c| c.fraction).chain([0.0]).collect(),
        _ => vec![1.0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{
            DataType,
            signature::examples::{column, matrix},
        },
        profile::format::{DatasetSummary, ModelSummary, Share},
    };

    fn profile() -> ReferenceProfile {
        let uniform = Bins {
            edges: vec![0.25, 0.5, 0.75],
            fractions: vec![0.25; 4],
            min: 0.0,
            max: 1.0,
        };
        let numeric = |index: usize| FeatureProfile {
            name: format!("f{index}"),
            input: "x".into(),
            index,
            kind: FeatureKind::Numeric,
            missing_rate: 0.0,
            bins: Some(uniform.clone()),
            categories: None,
        };
        ReferenceProfile {
            format: crate::profile::format::FORMAT.into(),
            version: crate::profile::format::VERSION,
            model: ModelSummary {
                name: "m".into(),
                version: "1".into(),
                sha256: String::new(),
            },
            dataset: DatasetSummary {
                path: String::new(),
                sha256: String::new(),
                rows: 100_000,
                sampled_rows: 100_000,
            },
            features: vec![
                numeric(0),
                numeric(1),
                FeatureProfile {
                    name: "plan".into(),
                    input: "plan".into(),
                    index: 0,
                    kind: FeatureKind::Categorical,
                    missing_rate: 0.0,
                    bins: None,
                    categories: Some(Categories {
                        top: vec![
                            Share {
                                value: "basic".into(),
                                fraction: 0.5,
                            },
                            Share {
                                value: "premium".into(),
                                fraction: 0.5,
                            },
                        ],
                        other: 0.0,
                    }),
                },
            ],
            predictions: vec![PredictionProfile {
                output: "label".into(),
                kind: PredictionKind::Classes,
                column: None,
                classes: Some(vec![
                    Share {
                        value: "0".into(),
                        fraction: 0.5,
                    },
                    Share {
                        value: "1".into(),
                        fraction: 0.5,
                    },
                ]),
                bins: None,
            }],
        }
    }

    fn signature() -> Signature {
        Signature {
            inputs: vec![
                matrix("x", DataType::Fp32, 2),
                column("plan", DataType::Bytes),
            ],
            outputs: vec![column("label", DataType::Int64)],
        }
    }

    fn tracker(max_features: usize) -> Tracker {
        let config = DriftConfig {
            sample_rate: 1.0,
            window_rows: 10_000,
            window_age: Duration::from_secs(900),
            max_features,
        };
        let labels = ModelLabels {
            model: "m".into(),
            version: "1".into(),
        };
        Tracker::new(&profile(), &signature(), &labels, config)
    }

    /// `rows` rows: f0 uniform over [0, 1), f1 uniform scaled by `scale`, plans alternating,
    /// labels alternating.
    fn batch(rows: usize, scale: f32, plan: &str) -> ScoredBatch {
        let mut x = Vec::new();
        for row in 0..rows {
            let u = (row as f32 + 0.5) / rows as f32;
            x.extend([u, u * scale]);
        }
        let plans = (0..rows)
            .map(|row| {
                if row % 2 == 0 {
                    "basic".to_owned()
                } else {
                    plan.to_owned()
                }
            })
            .collect();
        ScoredBatch {
            inputs: vec![
                Tensor::new(vec![rows, 2], TensorData::Fp32(x)).unwrap(),
                Tensor::new(vec![rows], TensorData::Bytes(plans)).unwrap(),
            ],
            outputs: vec![(
                0,
                Tensor::new(
                    vec![rows],
                    TensorData::Int64((0..rows as i64).map(|r| r % 2).collect()),
                )
                .unwrap(),
            )],
        }
    }

    fn psis(tracker: &Tracker) -> Vec<f64> {
        (0..tracker.features.len())
            .map(|c| {
                window_psi(&tracker.features_window, c, &tracker.features[c].reference).unwrap()
            })
            .collect()
    }

    #[test]
    fn in_distribution_rows_score_low_and_shifted_features_high() {
        let mut tracker = tracker(64);
        tracker.observe(&batch(2000, 1.0, "premium"), Instant::now());
        assert!(
            psis(&tracker).iter().all(|&psi| psi < 0.01),
            "{:?}",
            psis(&tracker)
        );
        let prediction = window_psi(
            &tracker.predictions_window,
            0,
            &tracker.predictions[0].reference,
        );
        assert!(prediction.unwrap() < 0.01);

        let mut shifted = self::tracker(64);
        shifted.observe(&batch(2000, 3.0, "enterprise"), Instant::now());
        let found = psis(&shifted);
        assert!(found[0] < 0.01, "f0 is unchanged: {found:?}");
        assert!(found[1] > 0.2, "f1 is scaled: {found:?}");
        assert!(found[2] > 0.2, "an unseen plan: {found:?}");
    }

    #[test]
    fn features_beyond_the_limit_are_checked_but_not_binned() {
        let mut tracker = tracker(1);
        assert_eq!((tracker.features.len(), tracker.summarised.len()), (1, 2));
        tracker.observe(&batch(10, 1.0, "enterprise"), Instant::now());
        assert_eq!(tracker.features_window.counts(0).1, 10, "one binned column");
    }

    #[test]
    fn a_sample_rate_bins_about_that_share_of_rows() {
        let mut tracker = tracker(64);
        tracker.sample_rate = 0.25;
        tracker.observe(&batch(4000, 1.0, "premium"), Instant::now());
        let binned = tracker.features_window.len();
        assert!((800..1200).contains(&binned), "{binned}");
    }
}
