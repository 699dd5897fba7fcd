//! What `pinserve eval` found, in the stable JSON schema pipelines read (`--report-json`), as
//! Markdown for a pull request's body (`--report-md`), and as a table on stdout.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::gate::RuleOutcome;

/// A metric's point estimate and its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Estimate {
    pub(crate) value: f64,
    #[serde(serialize_with = "interval")]
    pub(crate) ci: Option<(f64, f64)>,
}

fn interval<S: serde::Serializer>(
    ci: &Option<(f64, f64)>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match ci {
        Some((low, high)) => [low, high].serialize(serializer),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BaselineResult {
    pub(crate) model: String,
    pub(crate) version: String,
    pub(crate) metrics: BTreeMap<String, Estimate>,
    /// candidate − baseline on the same rows, with a paired interval.
    pub(crate) difference: BTreeMap<String, Estimate>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    /// Single-row requests through the batcher.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Rows per second at `--batch-size`, over the whole dataset.
    pub(crate) rows_per_second: f64,
}

/// The measurements the gate judges: the candidate's metrics, the baseline's and the
/// differences, and latency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Findings {
    pub(crate) metrics: BTreeMap<String, Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) baseline: Option<BaselineResult>,
    pub(crate) latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DatasetSummary {
    pub(crate) path: String,
    pub(crate) sha256: String,
    pub rows: u64,
}

/// How the model's outputs were read, and whether pinserve inferred it or was told.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Interpretation {
    pub(crate) inferred: bool,
    pub(crate) label_output: Option<String>,
    pub(crate) score_output: Option<String>,
    pub(crate) positive_class: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct GateSummary {
    pub(crate) rules: Vec<RuleOutcome>,
}

/// The whole report, `--report-json`'s schema.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) model: String,
    pub(crate) version: String,
    pub(crate) sha256: String,
    pub(crate) dataset: DatasetSummary,
    pub(crate) task: String,
    pub(crate) interpretation: Interpretation,
    #[serde(flatten)]
    pub(crate) evaluation: Findings,
    pub(crate) gate: GateSummary,
    pub(crate) passed: bool,
}

impl Report {
    pub(crate) fn to_json(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(self).expect("serialising to memory does not fail");
        text.push('\n');
        text
    }

    /// A heading, the metrics table and the gate's rules, as a pull request's body.
    pub(crate) fn to_markdown(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "passed" } else { "FAILED" };
        let _ = writeln!(
            out,
            "## Evaluation of {} version {}: {verdict}\n",
            self.model, self.version
        );
        let _ = writeln!(
            out,
            "{} on `{}` ({} rows, sha256 `{}`); model sha256 `{}`.\n",
            self.task,
            self.dataset.path,
            self.dataset.rows,
            short(&self.dataset.sha256),
            short(&self.sha256)
        );
        let rows = self.metric_rows();
        let _ = writeln!(out, "| {} |", rows[0].join(" | "));
        let _ = writeln!(out, "|{}", " --- |".repeat(rows[0].len()));
        for row in &rows[1..] {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        let latency = &self.evaluation.latency;
        let _ = writeln!(
            out,
            "\nLatency through the batcher: p50 {:.3} ms, p99 {:.3} ms (single rows); {:.0} rows/s.\n",
            latency.p50_ms, latency.p99_ms, latency.rows_per_second
        );
        if !self.gate.rules.is_empty() {
            let _ = writeln!(
                out,
                "| gate rule | observed | result |\n| --- | --- | --- |"
            );
            for rule in &self.gate.rules {
                let result = if rule.passed { "pass" } else { "**fail**" };
                let _ = writeln!(
                    out,
                    "| {} {} | {} | {result} |",
                    rule.metric,
                    rule.rule,
                    number(rule.observed)
                );
            }
        }
        out
    }

    /// The metrics and the gate as aligned columns, for a terminal.
    pub(crate) fn to_table(&self) -> String {
        let mut rows = self.metric_rows();
        for rule in &self.gate.rules {
            let result = if rule.passed { "pass" } else { "FAIL" };
            rows.push(vec![
                format!("gate: {} {}", rule.metric, rule.rule),
                number(rule.observed),
                result.to_owned(),
            ]);
        }
        let latency = &self.evaluation.latency;
        rows.push(vec![
            "latency p50 / p99 ms".to_owned(),
            format!("{:.3} / {:.3}", latency.p50_ms, latency.p99_ms),
        ]);
        rows.push(vec![
            "rows/s".to_owned(),
            format!("{:.0}", latency.rows_per_second),
        ]);
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                rows.iter()
                    .filter_map(|r| r.get(c))
                    .map(String::len)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        let verdict = if self.passed { "passed" } else { "FAILED" };
        let _ = writeln!(out, "{} version {}: {verdict}", self.model, self.version);
        out
    }

    /// A header row, then one row per metric: the candidate, and the baseline and difference
    /// when there is a baseline.
    fn metric_rows(&self) -> Vec<Vec<String>> {
        let baseline = self.evaluation.baseline.as_ref();
        let mut header = vec![
            "metric".to_owned(),
            format!("{} v{}", self.model, self.version),
        ];
        if let Some(baseline) = baseline {
            header.push(format!("{} v{}", baseline.model, baseline.version));
            header.push("difference".to_owned());
        }
        let mut rows = vec![header];
        for (name, estimate) in &self.evaluation.metrics {
            let mut row = vec![name.clone(), with_interval(estimate)];
            if let Some(baseline) = baseline {
                row.push(
                    baseline
                        .metrics
                        .get(name)
                        .map_or_else(String::new, with_interval),
                );
                row.push(
                    baseline
                        .difference
                        .get(name)
                        .map_or_else(String::new, with_interval),
                );
            }
            rows.push(row);
        }
        rows
    }
}

fn with_interval(estimate: &Estimate) -> String {
    match estimate.ci {
        Some((low, high)) => format!(
            "{} [{}, {}]",
            number(estimate.value),
            number(low),
            number(high)
        ),
        None => number(estimate.value),
    }
}

fn number(value: f64) -> String {
    format!("{value:.4}")
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(passed: bool) -> Report {
        let metrics = BTreeMap::from([(
            "accuracy".to_owned(),
            Estimate {
                value: 0.9,
                ci: Some((0.85, 0.95)),
            },
        )]);
        Report {
            model: "fraud".to_owned(),
            version: "9".to_owned(),
            sha256: "ab".repeat(32),
            dataset: DatasetSummary {
                path: "/data/test.csv".to_owned(),
                sha256: "cd".repeat(32),
                rows: 100,
            },
            task: "classification".to_owned(),
            interpretation: Interpretation {
                inferred: true,
                label_output: Some("label".to_owned()),
                score_output: Some("probabilities".to_owned()),
                positive_class: Some("1".to_owned()),
            },
            evaluation: Findings {
                metrics: metrics.clone(),
                baseline: Some(BaselineResult {
                    model: "fraud".to_owned(),
                    version: "8".to_owned(),
                    metrics,
                    difference: BTreeMap::from([(
                        "accuracy".to_owned(),
                        Estimate {
                            value: 0.01,
                            ci: Some((-0.01, 0.03)),
                        },
                    )]),
                }),
                latency: Latency {
                    p50_ms: 0.5,
                    p99_ms: 2.0,
                    rows_per_second: 50_000.0,
                },
            },
            gate: GateSummary {
                rules: vec![RuleOutcome {
                    metric: "accuracy".to_owned(),
                    rule: ">= 0.95".to_owned(),
                    observed: 0.9,
                    passed,
                }],
            },
            passed,
        }
    }

    #[test]
    fn the_json_has_the_documented_fields() {
        let json: serde_json::Value = serde_json::from_str(&report(false).to_json()).unwrap();
        for field in [
            "model", "version", "sha256", "dataset", "task", "metrics", "baseline", "latency",
            "gate", "passed",
        ] {
            assert!(!json[field].is_null(), "{field} in {json}");
        }
        assert_eq!(
            json["metrics"]["accuracy"]["ci"],
            serde_json::json!([0.85, 0.95])
        );
        assert_eq!(json["baseline"]["difference"]["accuracy"]["value"], 0.01);
        assert_eq!(json["dataset"]["rows"], 100);
        assert_eq!(json["gate"]["rules"][0]["passed"], false);
        assert_eq!(json["passed"], false);
    }

    #[test]
    fn markdown_and_table_show_the_verdict_and_every_metric() {
        let markdown = report(false).to_markdown();
        assert!(
            markdown.starts_with("## Evaluation of fraud version 9: FAILED"),
            "{markdown}"
        );
        assert!(markdown.contains("| accuracy | 0.9000 [0.8500, 0.9500] | 0.9000 [0.8500, 0.9500] | 0.0100 [-0.0100, 0.0300] |"), "{markdown}");
        assert!(markdown.contains("**fail**"));
        let table = report(true).to_table();
        assert!(table.ends_with("fraud version 9: passed\n"), "{table}");
        assert!(table.contains("gate: accuracy >= 0.95"), "{table}");
    }
}
