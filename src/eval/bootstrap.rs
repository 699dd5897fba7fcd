//! Uncertainty: percentile bootstrap intervals for each metric, and the paired bootstrap of
//! the difference candidate − baseline (both models scored on the same resampled rows).
//!
//! A resample is drawn as a count per row (how often the row was picked), and every metric is
//! recomputed with those counts as weights ([`Evaluation::metrics_weighted`]): O(rows) for
//! each metric, AUC included, because the rows' order by score is sorted once, not once per
//! resample. A million rows × 1000 resamples is therefore about 10⁹ draws plus one pass per
//! metric per resample, spread over the machine's cores. Resample `r` uses ChaCha8 stream `r`
//! of the seed, so results do not depend on the number of threads.

use std::{collections::BTreeMap, num::NonZeroUsize, thread};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::metrics::Evaluation;

#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapConfig {
    pub resamples: usize,
    /// The interval's coverage, e.g. 0.95 for the 2.5th to 97.5th percentiles.
    pub confidence: f64,
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 1000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// A point estimate on all rows and its percentile interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Resamples on which the metric was defined (AUC needs both classes), those the
    /// percentiles are taken over.
    pub(crate) resamples: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BootstrapError {
    #[error("the candidate was evaluated on {candidate} rows, the baseline on {baseline}")]
    RowMismatch { candidate: usize, baseline: usize },
    #[error("confidence must be between 0 and 1, got {0}")]
    Confidence(f64),
    #[error("at least one resample is needed")]
    NoResamples,
}

impl BootstrapConfig {
    fn check(&self) -> Result<(), BootstrapError> {
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(BootstrapError::Confidence(self.confidence));
        }
        if self.resamples == 0 {
            return Err(BootstrapError::NoResamples);
        }
        Ok(())
    }
}

/// Each metric of `evaluation` with its bootstrap interval.
pub fn intervals(
    evaluation: &Evaluation,
    config: &BootstrapConfig,
) -> Result<BTreeMap<String, Interval>, BootstrapError> {
    config.check()?;
    let samples = resample(evaluation.rows(), config, |w| {
        evaluation.metrics_weighted(w)
    });
    Ok(summarise(evaluation.metrics(), samples, config.confidence))
}

/// Each metric's difference candidate − baseline, with the paired bootstrap interval: every
/// resample scores both models on the same rows, so row-level noise cancels (a model compared
/// with itself gets exactly [0, 0]).
pub fn paired_difference(
    candidate: &Evaluation,
    baseline: &Evaluation,
    config: &BootstrapConfig,
) -> Result<BTreeMap<String, Interval>, BootstrapError> {
    config.check()?;
    if candidate.rows() != baseline.rows() {
        return Err(BootstrapError::RowMismatch {
            candidate: candidate.rows(),
            baseline: baseline.rows(),
        });
    }
    let difference = |weights: &[u32]| {
        subtract(
            candidate.metrics_weighted(weights),
            &baseline.metrics_weighted(weights),
        )
    };
    let samples = resample(candidate.rows(), config, difference);
    let estimate = subtract(candidate.metrics(), &baseline.metrics());
    Ok(summarise(estimate, samples, config.confidence))
}

fn subtract(
    mut left: BTreeMap<String, f64>,
    right: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    left.retain(|name, value| match right.get(name) {
        Some(other) => {
            *value -= other;
            true
        }
        None => false,
    });
    left
}

/// The row counts of resample `index`: `rows` draws with replacement.
fn draw(weights: &mut [u32], seed: u64, index: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    weights.fill(0);
    let rows = weights.len();
    for _ in 0..rows {
        weights[rng.random_range(0..rows)] += 1;
    }
}

/// `metrics` on every resample, in resample order, computed on all cores.
fn resample<F>(rows: usize, config: &BootstrapConfig, metrics: F) -> Vec<BTreeMap<String, f64>>
where
    F: Fn(&[u32]) -> BTreeMap<String, f64> + Sync,
{
    let threads = thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(config.resamples);
    let metrics = &metrics;
    let mut samples: Vec<(usize, BTreeMap<String, f64>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || {
                    let mut weights = vec![0u32; rows];
                    (first..config.resamples)
                        .step_by(threads)
                        .map(|index| {
                            draw(&mut weights, config.seed, index);
                            (index, metrics(&weights))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a bootstrap worker panicked"))
            .collect()
    });
    samples.sort_by_key(|(index, _)| *index);
    samples.into_iter().map(|(_, sample)| sample).collect()
}

fn summarise(
    estimates: BTreeMap<String, f64>,
    samples: Vec<BTreeMap<String, f64>>,
    confidence: f64,
) -> BTreeMap<String, Interval> {
    let tail = (1.0 - confidence) / 2.0;
    estimates
        .into_iter()
        .map(|(name, estimate)| {
            let mut values: Vec<f64> = samples
                .iter()
                .filter_map(|s| s.get(&name).copied())
                .collect();
            values.sort_by(f64::total_cmp);
            let interval = Interval {
                estimate,
                low: percentile(&values, tail),
                high: percentile(&values, 1.0 - tail),
                resamples: values.len(),
            };
            (name, interval)
        })
        .collect()
}

/// The `q`-quantile of sorted `values`, interpolated linearly (NumPy's default); NaN if empty.
fn percentile(values: &[f64], q: f64) -> f64 {
    let Some(last) = values.len().checked_sub(1) else {
        return f64::NAN;
    };
    let position = q * last as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(last);
    let fraction = position - below as f64;
    values[below] + fraction * (values[above] - values[below])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let values = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&values, 1.0), 4.0);
        assert!((percentile(&values, 0.025) - 1.075).abs() < 1e-12);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn a_draw_picks_each_row_as_often_as_rows() {
        let mut weights = vec![0; 50];
        draw(&mut weights, 7, 3);
        assert_eq!(weights.iter().sum::<u32>(), 50);
        let mut again = vec![9; 50];
        draw(&mut again, 7, 3);
        assert_eq!(weights, again);
        draw(&mut again, 7, 4);
        assert_ne!(weights, again);
    }
}
