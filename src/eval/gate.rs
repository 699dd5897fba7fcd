//! The gate a candidate must pass: per metric, MLflow's `MetricThreshold` rules (an absolute
//! `threshold`, and `min_absolute_change` / `min_relative_change` against the baseline, in the
//! metric's better direction), a p99 latency bound, and optionally judging changes on the
//! pessimistic end of their paired confidence interval instead of the point estimate.
//!
//! ```yaml
//! metrics:
//!   accuracy: {threshold: 0.9, min_absolute_change: 0.0}
//!   log_loss: {min_absolute_change: 0.0}
//! latency: {p99_ms: 50}
//! confidence_bound: true
//! ```

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use super::report::{Estimate, Findings};

/// Metrics where lower is better, unless a rule says otherwise.
const LOWER_IS_BETTER: [&str; 3] = ["log_loss", "rmse", "mae"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    #[serde(default)]
    pub(crate) metrics: BTreeMap<String, MetricRule>,
    #[serde(default)]
    pub(crate) latency: Option<LatencyRule>,
    /// Judge changes against the baseline on the pessimistic end of the paired interval.
    #[serde(default)]
    pub(crate) confidence_bound: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricRule {
    pub(crate) threshold: Option<f64>,
    pub(crate) min_absolute_change: Option<f64>,
    pub(crate) min_relative_change: Option<f64>,
    pub(crate) greater_is_better: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LatencyRule {
    pub(crate) p99_ms: f64,
}

/// One rule, what was observed and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RuleOutcome {
    pub(crate) metric: String,
    pub(crate) rule: String,
    pub(crate) observed: f64,
    pub(crate) passed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "the gate has a rule for '{metric}', which this evaluation does not compute (it computes: \
         {computed})"
    )]
    UnknownMetric { metric: String, computed: String },
    #[error(
        "the gate compares '{metric}' with the baseline ({rule}), but no baseline was given \
         (--baseline-uri or --baseline-from)"
    )]
    NoBaseline { metric: String, rule: &'static str },
    #[error(
        "the gate's rule for '{metric}' is empty: give threshold, min_absolute_change or min_relative_change"
    )]
    EmptyRule { metric: String },
}

impl Gate {
    pub fn read(path: &Path) -> Result<Gate, GateError> {
        let unreadable = |reason: String| GateError::Unreadable {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|err| unreadable(err.to_string()))?;
        serde_saphyr::from_str(&text).map_err(|err| unreadable(err.to_string()))
    }

    /// Every rule's outcome, in the gate's order (metrics by name, then latency).
    pub(crate) fn judge(&self, evaluation: &Findings) -> Result<Vec<RuleOutcome>, GateError> {
        let mut outcomes = Vec::new();
        for (metric, rule) in &self.metrics {
            outcomes.extend(self.judge_metric(metric, rule, evaluation)?);
        }
        if let Some(latency) = &self.latency {
            let observed = evaluation.latency.p99_ms;
            outcomes.push(RuleOutcome {
                metric: "latency_p99_ms".to_owned(),
                rule: format!("<= {}", latency.p99_ms),
                observed,
                passed: observed <= latency.p99_ms,
            });
        }
        Ok(outcomes)
    }

    fn judge_metric(
        &self,
        metric: &str,
        rule: &MetricRule,
        evaluation: &Findings,
    ) -> Result<Vec<RuleOutcome>, GateError> {
        let candidate = evaluation
            .metrics
            .get(metric)
            .ok_or_else(|| GateError::UnknownMetric {
                metric: metric.to_owned(),
                computed: evaluation
                    .metrics
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let higher = rule
            .greater_is_better
            .unwrap_or(!LOWER_IS_BETTER.contains(&metric));
        let mut outcomes = Vec::new();
        if let Some(threshold) = rule.threshold {
            outcomes.push(RuleOutcome {
                metric: metric.to_owned(),
                rule: format!("{} {threshold}", if higher { ">=" } else { "<=" }),
                observed: candidate.value,
                passed: better_or_equal(candidate.value, threshold, higher),
            });
        }
        let changes = [
            ("min_absolute_change", rule.min_absolute_change),
            ("min_relative_change", rule.min_relative_change),
        ];
        for (name, bound) in changes {
            if let Some(bound) = bound {
                outcomes.push(self.judge_change(metric, name, bound, higher, evaluation)?);
            }
        }
        if outcomes.is_empty() {
            return Err(GateError::EmptyRule {
                metric: metric.to_owned(),
            });
        }
        Ok(outcomes)
    }

    /// The improvement over the baseline (positive is better, in the metric's direction),
    /// absolute or relative to the baseline's value, compared with `bound`.
    fn judge_change(
        &self,
        metric: &str,
        rule: &'static str,
        bound: f64,
        higher: bool,
        evaluation: &Findings,
    ) -> Result<RuleOutcome, GateError> {
        let no_baseline = || GateError::NoBaseline {
            metric: metric.to_owned(),
            rule,
        };
        let baseline = evaluation.baseline.as_ref().ok_or_else(no_baseline)?;
        let difference = baseline.difference.get(metric).ok_or_else(no_baseline)?;
        let baseline_value = baseline.metrics.get(metric).map_or(0.0, |m| m.value);
        let improvement = self.improvement(difference, higher);
        let (observed, label) = if rule == "min_relative_change" {
            (
                improvement / baseline_value.abs().max(f64::EPSILON),
                "relative improvement",
            )
        } else {
            (improvement, "improvement")
        };
        let basis = if self.confidence_bound && difference.ci.is_some() {
            " (pessimistic end of the interval)"
        } else {
            ""
        };
        Ok(RuleOutcome {
            metric: metric.to_owned(),
            rule: format!("{label} over the baseline >= {bound}{basis}"),
            observed,
            passed: observed >= bound,
        })
    }

    /// candidate − baseline turned so that positive is better: the point estimate, or with
    /// `confidence_bound` the end of the interval least favourable to the candidate.
    fn improvement(&self, difference: &Estimate, higher: bool) -> f64 {
        let value = match difference.ci {
            Some((low, high)) if self.confidence_bound => {
                if higher {
                    low
                } else {
                    high
                }
            }
            _ => difference.value,
        };
        if higher { value } else { -value }
    }
}

fn better_or_equal(value: f64, bound: f64, higher: bool) -> bool {
    if higher {
        value >= bound
    } else {
        value <= bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::report::{BaselineResult, Latency};

    fn estimate(value: f64, ci: (f64, f64)) -> Estimate {
        Estimate {
            value,
            ci: Some(ci),
        }
    }

    fn evaluation(accuracy: f64, accuracy_diff: Estimate, log_loss_diff: Estimate) -> Findings {
        let metrics = BTreeMap::from([
            (
                "accuracy".to_owned(),
                estimate(accuracy, (accuracy - 0.02, accuracy + 0.02)),
            ),
            ("log_loss".to_owned(), estimate(0.3, (0.25, 0.35))),
        ]);
        Findings {
            metrics: metrics.clone(),
            baseline: Some(BaselineResult {
                model: "m".to_owned(),
                version: "1".to_owned(),
                metrics,
                difference: BTreeMap::from([
                    ("accuracy".to_owned(), accuracy_diff),
                    ("log_loss".to_owned(), log_loss_diff),
                ]),
            }),
            latency: Latency {
                p50_ms: 1.0,
                p99_ms: 4.0,
                rows_per_second: 1000.0,
            },
        }
    }

    fn gate(text: &str) -> Gate {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn thresholds_and_changes_follow_each_metrics_direction() {
        let gate = gate(
            "metrics:\n  accuracy: {threshold: 0.9, min_absolute_change: 0.0}\n  log_loss: {min_absolute_change: 0.0}\nlatency: {p99_ms: 5}\n",
        );
        // Better accuracy, lower (better) log loss: every rule holds.
        let good = evaluation(
            0.92,
            estimate(0.01, (-0.01, 0.03)),
            estimate(-0.05, (-0.08, 0.01)),
        );
        let outcomes = gate.judge(&good).unwrap();
        assert_eq!(outcomes.len(), 4);
        assert!(outcomes.iter().all(|o| o.passed), "{outcomes:?}");
        // Higher log loss is worse, whatever its sign.
        let worse = evaluation(
            0.92,
            estimate(0.01, (-0.01, 0.03)),
            estimate(0.05, (0.01, 0.08)),
        );
        let failed: Vec<_> = gate
            .judge(&worse)
            .unwrap()
            .into_iter()
            .filter(|o| !o.passed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].metric, "log_loss");
        assert!((failed[0].observed + 0.05).abs() < 1e-12);
        let below = evaluation(
            0.85,
            estimate(0.01, (-0.01, 0.03)),
            estimate(-0.05, (-0.08, 0.01)),
        );
        let outcome = &gate.judge(&below).unwrap()[0];
        assert_eq!((outcome.rule.as_str(), outcome.passed), (">= 0.9", false));
    }

    #[test]
    fn the_confidence_bound_judges_the_pessimistic_end() {
        let text = "metrics:\n  accuracy: {min_absolute_change: 0.0}\n  log_loss: {min_relative_change: 0.0}\n";
        let point = gate(text);
        let bounded = gate(&format!("{text}confidence_bound: true\n"));
        let run = evaluation(
            0.92,
            estimate(0.01, (-0.01, 0.03)),
            estimate(-0.05, (-0.08, 0.01)),
        );
        assert!(point.judge(&run).unwrap().iter().all(|o| o.passed));
        let outcomes = bounded.judge(&run).unwrap();
        assert!(outcomes.iter().all(|o| !o.passed), "{outcomes:?}");
        assert!((outcomes[0].observed + 0.01).abs() < 1e-12);
        assert!((outcomes[1].observed + 0.01 / 0.3).abs() < 1e-12);
    }

    #[test]
    fn unknown_metrics_missing_baselines_and_typos_are_errors() {
        let run = evaluation(0.9, estimate(0.0, (0.0, 0.0)), estimate(0.0, (0.0, 0.0)));
        let err = gate("metrics:\n  rmse: {threshold: 1}\n")
            .judge(&run)
            .unwrap_err();
        assert!(
            err.to_string().contains("it computes: accuracy, log_loss"),
            "{err}"
        );
        let mut alone = run.clone();
        alone.baseline = None;
        let err = gate("metrics:\n  accuracy: {min_absolute_change: 0}\n")
            .judge(&alone)
            .unwrap_err();
        assert!(matches!(err, GateError::NoBaseline { .. }), "{err}");
        assert!(serde_saphyr::from_str::<Gate>("metrics:\n  accuracy: {treshold: 1}\n").is_err());
        let err = gate("metrics:\n  accuracy: {}\n").judge(&run).unwrap_err();
        assert!(matches!(err, GateError::EmptyRule { .. }), "{err}");
    }
}
