//! The canary analysis, the alerts and the dashboard, proven against a real Prometheus scraping
//! real pinserve processes, each standing for one pod of a rollout's ReplicaSet. Prometheus
//! scrapes each every second with the labels the PodMonitor gives a pod (`namespace`, `pod`,
//! `service`, `rollouts_pod_template_hash`, and a `job` named as the Prometheus Operator names it).
//!
//! Three services:
//! - `embeddings` (`embedding_lookup`, no reference profile): version 1 is good; version 2 has its
//!   table pruned to 95 ids, so ONNX Runtime fails the requests for ids 95-99 (500s, 5% of the
//!   traffic); version 3 answers like version 1 after about a second of work.
//! - `tumours` (`breast_cancer` with reference profiles from its test split, rows of that split
//!   as traffic): a second pod of version 1 (the twin), version 2 whose biased intercept shifts
//!   its predicted classes while its answers stay fast and successful, and a pod of version 1
//!   that gets a request every few seconds (too little traffic to judge).
//! - `tumours-retrained`: version 1 with a profile of data whose `mean_texture` was five times
//!   larger (a model trained on a feature pipeline unlike the one serving it), against
//!   `tumours`' stable pod; and `tumours-drifted`: a stable and a canary pod of version 1 both
//!   served rows whose `mean_radius` is five times larger (drift in the data both see).
//!
//! - k8s/base/analysis-template.yaml: its own queries, with `{{args.*}}` substituted, run
//!   through Prometheus's HTTP API and judged by its own `successCondition`s and
//!   `failureCondition`s (see `common::analysis::condition`): Successful, Failed or Inconclusive
//!   as the table in [`expected_phase`] says for each metric and canary.
//! - k8s/monitoring/prometheusrule.yaml: loaded into Prometheus's rule engine; each alert must
//!   become active for the degraded processes it is about, and for no healthy one; the drift
//!   alerts for the shifted feature only.
//! - k8s/monitoring/grafana-dashboard.json: every panel query and template variable, with the
//!   variables substituted, must select series of every version of `embedding_lookup`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{
    Server,
    analysis::{
        condition::{self, Phase},
        prometheus::{Alert, Answer, Prometheus, Target, poll},
    },
    fixtures,
    metrics::{find_sample, sample_value},
    profiles::write_profile,
};
use serde_json::{Value, json};

const NAMESPACE: &str = "canary-test";
/// The Prometheus Operator names a PodMonitor's job `<namespace>/<PodMonitor name>`.
const JOB: &str = "canary-test/pinserve";
const MODEL: &str = "embedding_lookup";
const INFER: &str = "/v2/models/embedding_lookup/infer";
const TUMOURS: &str = "breast_cancer";

/// Pod template hashes, one per process; `ABSENT` has no process at all.
const STABLE: &str = "stable";
const PRUNED: &str = "pruned";
const SLOW: &str = "slow";
const IDLE: &str = "idle";
const DRAINING: &str = "draining";
const BROKEN: &str = "broken";
const ABSENT: &str = "absent";
const TUMOURS_STABLE: &str = "tumours-stable";
const TUMOURS_TWIN: &str = "tumours-twin";
const BIASED: &str = "biased";
const FEW: &str = "few";
const RETRAINED: &str = "retrained";
const DRIFTED_STABLE: &str = "drifted-stable";
const DRIFTED_CANARY: &str = "drifted-canary";

/// The canaries each metric of the template is measured for.
const CANARIES: [&str; 11] = [
    STABLE,
    PRUNED,
    SLOW,
    IDLE,
    ABSENT,
    TUMOURS_STABLE,
    TUMOURS_TWIN,
    BIASED,
    FEW,
    RETRAINED,
    DRIFTED_CANARY,
];

/// The stable version a canary is compared with: its service's.
fn stable_of(canary: &str) -> &'static str {
    match canary {
        DRIFTED_CANARY => DRIFTED_STABLE,
        TUMOURS_STABLE | TUMOURS_TWIN | BIASED | FEW | RETRAINED => TUMOURS_STABLE,
        _ => STABLE,
    }
}

/// The smallest canary traffic the test passes as the template's `min-requests`: the slow
/// version answers about one request a second, so the default of 100 would leave it
/// Inconclusive for minutes; the pod with too little traffic stays far below it.
const MIN_REQUESTS: &str = "20";

/// breast_cancer's features that the drifted traffic and the retrained profile scale, and by how
/// much: enough that both predicted classes and scores move (by three, the classes' PSI would be
/// 0.13 and 0.18, too close to the alerts' 0.2 to test them).
const RADIUS: usize = 0;
const TEXTURE: usize = 1;
const SCALE: f64 = 5.0;

/// How long Prometheus may take to show what the load produced. It needs seconds on a quiet
/// machine; on two cores shared with builds the slow version's few requests a second take
/// minutes to add up, and a wait that is met returns at once, so the bound is generous.
const DATA_TIMEOUT: Duration = Duration::from_secs(300);

/// What a pod is sent.
#[derive(Clone)]
enum Traffic {
    /// [`request`]s, every `pace`.
    Ids(Duration),
    /// Rows of breast_cancer's test split, the `scaled` feature (if any) five times larger,
    /// every `pace`.
    Tumours {
        pace: Duration,
        scaled: Option<usize>,
    },
}

/// A pinserve process standing for one pod of a ReplicaSet.
struct Pod {
    hash: &'static str,
    service: &'static str,
    name: String,
    traffic: Option<Traffic>,
    server: Server,
}

impl Pod {
    fn start(
        (model, version): (&str, &str),
        service: &'static str,
        hash: &'static str,
        traffic: Option<Traffic>,
        extra: &[&str],
    ) -> Pod {
        Pod {
            hash,
            service,
            name: format!("{service}-{hash}-0"),
            traffic,
            server: Server::start_fixture(model, version, extra),
        }
    }

    fn target(&self) -> Target {
        Target {
            address: self.server.address,
            labels: BTreeMap::from([
                ("namespace", NAMESPACE.to_owned()),
                ("pod", self.name.clone()),
                ("service", self.service.to_owned()),
                ("rollouts_pod_template_hash", self.hash.to_owned()),
            ]),
        }
    }
}

/// The pods of the scenario, one process each, and the reference profiles they read.
struct Fleet {
    pods: Vec<Pod>,
    _profiles: tempfile::TempDir,
}

impl Fleet {
    /// Starts every pod and brings each into its state before Prometheus first scrapes them.
    async fn start() -> Fleet {
        let profiles = tempfile::tempdir().unwrap();
        let profile = |version: &str, scaled: Option<usize>| {
            tumours_profile(profiles.path(), version, scaled)
                .to_str()
                .unwrap()
                .to_owned()
        };
        let (first, second, retrained) = (profile("1", None), profile("2", None), {
            profile("1", Some(TEXTURE))
        });
        let fast = Duration::from_millis(20);
        let tumours = |scaled| {
            Some(Traffic::Tumours {
                pace: Duration::from_millis(40),
                scaled,
            })
        };
        let few = Some(Traffic::Tumours {
            pace: Duration::from_secs(10),
            scaled: None,
        });
        let tumour_pod = |version, service, hash, traffic, profile: &str| {
            Pod::start(
                (TUMOURS, version),
                service,
                hash,
                traffic,
                &["--reference-profile", profile],
            )
        };
        let embeddings = |version| (MODEL, version);
        let pods = vec![
            Pod::start(
                embeddings("1"),
                "embeddings",
                STABLE,
                Some(Traffic::Ids(fast)),
                &[],
            ),
            Pod::start(
                embeddings("2"),
                "embeddings",
                PRUNED,
                Some(Traffic::Ids(fast)),
                &[],
            ),
            // One thread, so that the slow version's cost does not depend on the number of cores.
            Pod::start(
                embeddings("3"),
                "embeddings",
                SLOW,
                Some(Traffic::Ids(fast)),
                &["--intra-op-threads", "1"],
            ),
            Pod::start(embeddings("1"), "embeddings", IDLE, None, &[]),
            Pod::start(
                embeddings("1"),
                "embeddings",
                DRAINING,
                None,
                &["--drain-seconds", "600"],
            ),
            // A model ONNX Runtime refuses: pinserve reports failed and exits, like a
            // crash-looping pod.
            Pod::start(("broken", "1"), "broken", BROKEN, None, &[]),
            tumour_pod("1", "tumours", TUMOURS_STABLE, tumours(None), &first),
            tumour_pod("1", "tumours", TUMOURS_TWIN, tumours(None), &first),
            tumour_pod("2", "tumours", BIASED, tumours(None), &second),
            tumour_pod("1", "tumours", FEW, few, &first),
            tumour_pod(
                "1",
                "tumours-retrained",
                RETRAINED,
                tumours(None),
                &retrained,
            ),
            tumour_pod(
                "1",
                "tumours-drifted",
                DRIFTED_STABLE,
                tumours(Some(RADIUS)),
                &first,
            ),
            tumour_pod(
                "1",
                "tumours-drifted",
                DRIFTED_CANARY,
                tumours(Some(RADIUS)),
                &first,
            ),
        ];
        let fleet = Fleet {
            pods,
            _profiles: profiles,
        };
        for pod in fleet.pods.iter().filter(|pod| pod.hash != BROKEN) {
            pod.server.wait_ready().await;
        }
        assert_slow_enough(fleet.pod(SLOW)).await;
        // The idle version answers these before Prometheus first scrapes it: its counters exist
        // but never move in the window, so its rates are 0 and its error ratio is 0/0.
        let idle = &fleet.pod(IDLE).server;
        for i in 0..20 {
            let (status, body) = idle.post_json(INFER, &request(i * 25)).await;
            assert_eq!(status, 200, "{body}");
        }
        let draining = &fleet.pod(DRAINING).server;
        draining.signal("TERM");
        draining.wait_for_health("draining").await;
        fleet
    }

    fn pod(&self, hash: &str) -> &Pod {
        self.pods.iter().find(|pod| pod.hash == hash).unwrap()
    }

    fn targets(&self) -> Vec<Target> {
        self.pods.iter().map(Pod::target).collect()
    }
}

/// breast_cancer's test split as the model reads it: 30 features per row.
fn tumour_rows() -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(fixtures().join("breast_cancer/test.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            line.split(',')
                .take(30)
                .map(|value| value.parse().unwrap())
                .collect()
        })
        .collect()
}

/// `pinserve profile` of breast_cancer `version` on its test split, the `scaled` feature (if
/// any) five times larger in that data.
fn tumours_profile(dir: &Path, version: &str, scaled: Option<usize>) -> std::path::PathBuf {
    let source = std::fs::read_to_string(fixtures().join("breast_cancer/test.csv")).unwrap();
    let mut lines = source.lines();
    let mut text = lines.next().unwrap().to_owned() + "\n";
    for line in lines {
        let mut values: Vec<String> = line.split(',').map(str::to_owned).collect();
        if let Some(column) = scaled {
            values[column] = (values[column].parse::<f64>().unwrap() * SCALE).to_string();
        }
        text += &(values.join(",") + "\n");
    }
    let name = format!("v{version}-{scaled:?}");
    let data = dir.join(format!("{name}.csv"));
    std::fs::write(&data, text).unwrap();
    let out = dir.join(format!("{name}.json"));
    write_profile(
        &fixtures().join(format!("breast_cancer/{version}")),
        &data,
        &out,
        &["--target", "target"],
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_analysis_alerts_and_dashboard_against_real_prometheus() {
    let metrics = analysis_metrics();
    let rules = read_yaml("k8s/monitoring/prometheusrule.yaml")["spec"].clone();
    let dashboard: Value = serde_json::from_str(&read("k8s/monitoring/grafana-dashboard.json"))
        .expect("the dashboard is not JSON");

    let fleet = Fleet::start().await;
    let prometheus = Prometheus::start(JOB, &fleet.targets(), &rules).await;
    let load = Load::start(&fleet.pods);
    wait_for_traffic(&prometheus).await;

    check_analysis(&prometheus, &metrics).await;
    check_alerts(&prometheus, &rules, fleet.pod(BROKEN)).await;
    check_dashboard(&prometheus, &dashboard).await;

    let tallies = load.stop().await;
    eprintln!("answers the load got: {tallies:?}");
    for (hash, tally) in &tallies {
        let codes: BTreeSet<&str> = tally.keys().map(String::as_str).collect();
        let expected = match *hash {
            PRUNED => BTreeSet::from(["200", "400", "500"]),
            STABLE | SLOW => BTreeSet::from(["200", "400"]),
            _ => BTreeSet::from(["200"]),
        };
        assert!(codes.is_subset(&expected), "{hash}: {tally:?}");
    }
    assert!(tallies[PRUNED].contains_key("500"), "{tallies:?}");
}

/// The phase Argo Rollouts must reach, per metric of the template, for each canary (compared
/// with [`stable_of`] it).
fn expected_phase(metric: &str, canary: &str) -> Phase {
    use Phase::{Failed, Inconclusive, Successful};
    let comparison = metric.ends_with("-vs-stable") || metric == "prediction-shift";
    match (metric, canary) {
        // No request in the window: the absolute limits fail, the comparisons cannot tell.
        (_, IDLE | ABSENT) if comparison => Inconclusive,
        (_, IDLE | ABSENT) => Failed,
        // A request every 10 seconds is enough for the absolute limits, too few to compare.
        (_, FEW) if comparison => Inconclusive,
        ("error-rate" | "error-rate-vs-stable", PRUNED) => Failed,
        ("p99-latency" | "p99-vs-stable", SLOW) => Failed,
        ("prediction-shift", BIASED) => Failed,
        ("feature-drift-vs-stable", RETRAINED) => Failed,
        // Each metric judges its own dimension: fast 500s do not break the p99, slow 200s are
        // no errors, shifted classes are neither, and drift that both versions see is no
        // difference between them.
        (
            "error-rate"
            | "p99-latency"
            | "error-rate-vs-stable"
            | "p99-vs-stable"
            | "prediction-shift"
            | "feature-drift-vs-stable",
            STABLE | PRUNED | SLOW | TUMOURS_STABLE | TUMOURS_TWIN | BIASED | FEW | RETRAINED
            | DRIFTED_CANARY,
        ) => Successful,
        _ => panic!("no expectation for metric {metric:?} on {canary:?}: add one"),
    }
}

/// Runs every metric of the template for each canary, as an AnalysisRun's measurement would,
/// and compares Argo's phase with the expected one; then checks what made the no-data cases
/// fail.
async fn check_analysis(prometheus: &Prometheus, metrics: &[AnalysisMetric]) {
    for metric in metrics {
        for canary in CANARIES {
            let (answer, phase) = metric.measure(prometheus, canary).await;
            let phase = phase.unwrap_or_else(|err| {
                panic!(
                    "{}: {:?} / {:?} cannot be evaluated: {err}",
                    metric.name, metric.success, metric.failure
                )
            });
            eprintln!(
                "{} for {canary} (against {}): {} -> {phase:?}",
                metric.name,
                stable_of(canary),
                answer.as_result()
            );
            assert_eq!(
                phase,
                expected_phase(&metric.name, canary),
                "{} for {canary}: result {} judged by {:?} / {:?}",
                metric.name,
                answer.as_result(),
                metric.success,
                metric.failure
            );
        }
        let (absent, _) = metric.measure(prometheus, ABSENT).await;
        assert!(absent.samples().is_empty(), "{}: {absent:?}", metric.name);
        if metric.failure.is_some() {
            continue;
        }
        // The idle version's answer has one sample once Prometheus holds two scrapes of it.
        let idle = poll("the idle version's measurement", DATA_TIMEOUT, async || {
            let (answer, _) = metric.measure(prometheus, IDLE).await;
            match answer.samples() {
                [sample] => Ok(sample.value),
                samples => Err(format!("{samples:?}")),
            }
        })
        .await;
        assert!(
            idle.is_nan(),
            "{}: no requests in the window must give NaN, got {idle}",
            metric.name
        );
    }
}

/// Waits until Prometheus has seen enough of the load for stable ratios and quantiles: a few
/// hundred requests on the fast embedding versions (so 5% of errors is a dozen), more than
/// [`MIN_REQUESTS`] on every canary compared, and windows of 1000 rows on the pods the drift
/// alerts are about. `increase()` counts only what happened between scrapes, as `rate()` in the
/// analysis does; a plain counter could already be high at a late first scrape, with nothing yet
/// to take a rate of.
async fn wait_for_traffic(prometheus: &Prometheus) {
    let compared: f64 = MIN_REQUESTS.parse::<f64>().unwrap() * 1.5;
    poll("the load to show in Prometheus", DATA_TIMEOUT, async || {
        let answer = prometheus
            .query(
                "sum by (rollouts_pod_template_hash, code) \
                 (increase(pinserve_requests_total[2m]))",
            )
            .await;
        let count = |hash: &str, code_prefix: &str| -> f64 {
            answer
                .samples()
                .iter()
                .filter(|s| s.labels["rollouts_pod_template_hash"] == hash)
                .filter(|s| s.labels["code"].starts_with(code_prefix))
                .map(|s| s.value)
                .sum()
        };
        let windows = prometheus.query("pinserve_drift_window_rows").await;
        let window = |hash: &str| -> f64 {
            windows
                .samples()
                .iter()
                .find(|s| s.labels["rollouts_pod_template_hash"] == hash)
                .map_or(0.0, |s| s.value)
        };
        let enough = count(STABLE, "") >= 200.0
            && count(PRUNED, "") >= 200.0
            && count(PRUNED, "5") >= 10.0
            && [
                SLOW,
                TUMOURS_STABLE,
                TUMOURS_TWIN,
                BIASED,
                RETRAINED,
                DRIFTED_CANARY,
            ]
            .iter()
            .all(|hash| count(hash, "") >= compared)
            && [TUMOURS_STABLE, RETRAINED, DRIFTED_STABLE, DRIFTED_CANARY]
                .iter()
                .all(|hash| window(hash) >= 1000.0);
        if enough {
            Ok(())
        } else {
            Err(format!("{:?} {:?}", answer.samples(), windows.samples()))
        }
    })
    .await;
}

/// Version 3 must break the p99 limit by itself, on this machine too: its one inference, as the
/// server's own histogram files it (the warm-up is not in it), lands above the 0.5 s bucket edge
/// that the analysis's p99 is read against.
async fn assert_slow_enough(slow: &Pod) {
    let (status, body) = slow.server.post_json(INFER, &request(0)).await;
    assert_eq!(status, 200, "{body}");
    let name = "pinserve_inference_duration_seconds_bucket";
    let metrics = slow
        .server
        .metrics_when(|text| find_sample(text, name, &[("le", "+Inf")]) == Some(1.0))
        .await;
    assert_eq!(
        sample_value(&metrics, name, &[("le", "0.5")]),
        0.0,
        "embedding_lookup version 3 inferred within 0.5 s: this CPU is too fast for the \
         fixture to break a 0.5 s p99; raise REFINE_STEPS in models-fixtures/generate.py"
    );
}

// --------------------------------------------------------------------------------------------
// The AnalysisTemplate
// --------------------------------------------------------------------------------------------

/// One metric of the AnalysisTemplate, as written in the YAML.
struct AnalysisMetric {
    name: String,
    success: String,
    failure: Option<String>,
    address: String,
    query: String,
    default_args: BTreeMap<String, String>,
}

impl AnalysisMetric {
    /// One measurement of `canary` against its stable version: the query with the Rollout's
    /// arguments substituted, run at the address the template names (this Prometheus's, through
    /// `prometheus-address`), and the phase its conditions give the answer.
    async fn measure(
        &self,
        prometheus: &Prometheus,
        canary: &str,
    ) -> (Answer, Result<Phase, String>) {
        let mut args = self.default_args.clone();
        args.insert("canary-hash".to_owned(), canary.to_owned());
        args.insert("stable-hash".to_owned(), stable_of(canary).to_owned());
        args.insert("min-requests".to_owned(), MIN_REQUESTS.to_owned());
        args.insert("prometheus-address".to_owned(), prometheus.url.clone());
        assert_eq!(substitute_args(&self.address, &args), prometheus.url);
        let answer = prometheus.query(&substitute_args(&self.query, &args)).await;
        let phase = condition::judge(
            Some(&self.success),
            self.failure.as_deref(),
            &answer.as_result(),
        );
        (answer, phase)
    }
}

fn analysis_metrics() -> Vec<AnalysisMetric> {
    let template = read_yaml("k8s/base/analysis-template.yaml");
    assert_eq!(template["kind"].as_str(), Some("AnalysisTemplate"));
    assert_eq!(
        template["metadata"]["name"].as_str(),
        Some("pinserve-canary")
    );
    let spec = &template["spec"];
    let args: BTreeMap<String, Option<String>> = spec["args"]
        .as_sequence()
        .expect("spec.args")
        .iter()
        .map(|arg| {
            let name = arg["name"].as_str().unwrap().to_owned();
            (name, arg["value"].as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        args.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "canary-hash",
            "min-requests",
            "prometheus-address",
            "stable-hash"
        ],
        "the Rollout passes the hashes; the others have defaults"
    );
    assert_eq!(args["canary-hash"], None);
    assert_eq!(args["stable-hash"], None);
    assert_eq!(args["min-requests"].as_deref(), Some("100"));
    assert_eq!(
        args["prometheus-address"].as_deref(),
        Some("http://prometheus-operated.monitoring.svc:9090")
    );
    let default_args: BTreeMap<String, String> = args
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
    let metrics: Vec<AnalysisMetric> = spec["metrics"]
        .as_sequence()
        .expect("spec.metrics")
        .iter()
        .map(|metric| {
            let text = |value: &serde_yaml_ng::Value, what: &str| {
                value
                    .as_str()
                    .unwrap_or_else(|| panic!("metric without {what}: {metric:?}"))
                    .to_owned()
            };
            let prometheus = &metric["provider"]["prometheus"];
            AnalysisMetric {
                name: text(&metric["name"], "name"),
                success: text(&metric["successCondition"], "successCondition"),
                failure: metric["failureCondition"].as_str().map(str::to_owned),
                address: text(&prometheus["address"], "provider.prometheus.address"),
                query: text(&prometheus["query"], "provider.prometheus.query"),
                default_args: default_args.clone(),
            }
        })
        .collect();
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "error-rate",
            "p99-latency",
            "error-rate-vs-stable",
            "p99-vs-stable",
            "prediction-shift",
            "feature-drift-vs-stable"
        ]
    );
    metrics
}

/// Resolves `{{args.NAME}}` (or `{{ args.NAME }}`) as Argo Rollouts does when it creates an
/// AnalysisRun; any other placeholder fails the test.
fn substitute_args(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut resolved = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let length = rest[start..]
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed placeholder in {text:?}"));
        let placeholder = rest[start + 2..start + length].trim();
        let name = placeholder
            .strip_prefix("args.")
            .unwrap_or_else(|| panic!("unsupported placeholder {placeholder:?}"));
        resolved.push_str(&rest[..start]);
        resolved.push_str(
            args.get(name)
                .unwrap_or_else(|| panic!("no value for argument {name:?}")),
        );
        rest = &rest[start + length + 2..];
    }
    resolved + rest
}

// --------------------------------------------------------------------------------------------
// The PrometheusRule
// --------------------------------------------------------------------------------------------

/// One alert instance: its name and the labels that tell which process or feature it is about.
type Instance = (&'static str, Vec<(&'static str, &'static str)>);

/// Each alert must become active (pending: their `for` is minutes) for the degraded processes it
/// is about, and stay quiet for the healthy ones. No alert may be left without such a case.
/// TargetDown's quiet side is not asserted: it is `up`, Prometheus's own, and a healthy target's
/// scrape may time out now and then on a loaded machine.
async fn check_alerts(prometheus: &Prometheus, rules: &serde_yaml_ng::Value, broken: &Pod) {
    let drifted = |alert, feature, name| -> Instance {
        (
            alert,
            vec![
                ("service", "tumours-drifted"),
                ("version", "1"),
                (feature, name),
            ],
        )
    };
    let retrained = |alert, feature, name| -> Instance {
        (
            alert,
            vec![
                ("service", "tumours-retrained"),
                ("version", "1"),
                (feature, name),
            ],
        )
    };
    let broken_pod: &'static str = broken.name.clone().leak();
    let expected: Vec<Instance> = vec![
        (
            "PinserveErrorRateHigh",
            vec![("model", MODEL), ("version", "2")],
        ),
        (
            "PinserveLatencyP99High",
            vec![("model", MODEL), ("version", "3")],
        ),
        (
            "PinserveNotReady",
            vec![("rollouts_pod_template_hash", DRAINING)],
        ),
        ("PinserveTargetDown", vec![("pod", broken_pod)]),
        drifted("PinserveFeatureDrift", "feature", "mean_radius"),
        retrained("PinserveFeatureDrift", "feature", "mean_texture"),
        drifted("PinservePredictionDrift", "output", "label"),
        drifted("PinservePredictionDrift", "output", "probabilities"),
        retrained("PinservePredictionDrift", "output", "label"),
        retrained("PinservePredictionDrift", "output", "probabilities"),
        drifted("PinserveFeatureOutOfRange", "feature", "mean_radius"),
        retrained("PinserveFeatureOutOfRange", "feature", "mean_texture"),
    ];
    let names: BTreeSet<&str> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap())
        .map(|rule| rule["alert"].as_str().expect("only alerting rules"))
        .collect();
    assert_eq!(
        names,
        expected.iter().map(|(name, _)| *name).collect(),
        "every alert needs a degraded case here"
    );
    let alerts = poll(
        "every alert active for its case",
        DATA_TIMEOUT,
        async || {
            let alerts = prometheus.alerts().await;
            let missing: Vec<_> = expected
                .iter()
                .filter(|(name, labels)| !alerts.iter().any(|a| is(a, name, labels)))
                .collect();
            if missing.is_empty() {
                Ok(alerts)
            } else {
                Err(format!("missing {missing:?}; active: {alerts:?}"))
            }
        },
    )
    .await;
    eprintln!("active alerts: {alerts:#?}");
    let active = |name: &str, labels: &[(&str, &str)]| alerts.iter().any(|a| is(a, name, labels));
    for version in ["1", "3"] {
        assert!(
            !active("PinserveErrorRateHigh", &[("version", version)]),
            "{alerts:?}"
        );
    }
    for version in ["1", "2"] {
        assert!(
            !active("PinserveLatencyP99High", &[("version", version)]),
            "{alerts:?}"
        );
    }
    for hash in [STABLE, PRUNED, SLOW, IDLE, TUMOURS_STABLE, BIASED, FEW] {
        assert!(
            !active("PinserveNotReady", &[("rollouts_pod_template_hash", hash)]),
            "{alerts:?}"
        );
    }
    // The drift alerts are about the shifted feature of the services whose data or profile was
    // shifted, and nothing else: not the other 29 features, not the service whose rows are its
    // training data's (whichever version, and however few rows one of its pods saw).
    for name in [
        "PinserveFeatureDrift",
        "PinservePredictionDrift",
        "PinserveFeatureOutOfRange",
    ] {
        let found: BTreeSet<Vec<(String, String)>> = alerts
            .iter()
            .filter(|alert| alert.name == name)
            .map(|alert| {
                ["service", "version", "feature", "output"]
                    .iter()
                    .filter_map(|label| {
                        Some((label.to_string(), alert.labels.get(*label)?.clone()))
                    })
                    .collect()
            })
            .collect();
        let wanted: BTreeSet<Vec<(String, String)>> = expected
            .iter()
            .filter(|(alert, _)| *alert == name)
            .map(|(_, labels)| {
                let mut labels: Vec<(String, String)> = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                labels.sort();
                labels
            })
            .collect();
        let found: BTreeSet<Vec<(String, String)>> = found
            .into_iter()
            .map(|mut labels| {
                labels.sort();
                labels
            })
            .collect();
        assert_eq!(found, wanted, "{name}: {alerts:?}");
    }
    for alert in alerts
        .iter()
        .filter(|alert| alert.name.contains("Drift") || alert.name.contains("OutOfRange"))
    {
        for label in ["namespace", "service", "model", "version"] {
            assert!(
                alert.labels.contains_key(label),
                "{label} missing: {alert:?}"
            );
        }
    }
    for (name, health, error) in prometheus.rule_health().await {
        assert_eq!(health, "ok", "rule {name}: {error}");
    }
}

fn is(alert: &Alert, name: &str, labels: &[(&str, &str)]) -> bool {
    alert.name == name
        && labels
            .iter()
            .all(|(label, value)| alert.labels.get(*label).map(String::as_str) == Some(*value))
        && matches!(alert.state.as_str(), "pending" | "firing")
}

// --------------------------------------------------------------------------------------------
// The Grafana dashboard
// --------------------------------------------------------------------------------------------

/// Every panel query, with the dashboard's variables set to this test's namespace and model,
/// all versions, and a rate interval, must give a series for each of the three versions; every
/// template variable must offer the values this test's series carry.
async fn check_dashboard(prometheus: &Prometheus, dashboard: &Value) {
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let all_versions = variables
        .iter()
        .find(|variable| variable["name"] == "version")
        .and_then(|variable| variable["allValue"].as_str())
        .expect("a version variable with an allValue");
    let values = BTreeMap::from([
        ("namespace", NAMESPACE),
        ("model", MODEL),
        ("version", all_versions),
        ("__rate_interval", "1m"),
    ]);
    let versions = BTreeSet::from(["1".to_owned(), "2".to_owned(), "3".to_owned()]);
    for variable in variables
        .iter()
        .filter(|variable| variable["type"] == "query")
    {
        let name = variable["name"].as_str().unwrap();
        let query = substitute_variables(variable["query"]["query"].as_str().unwrap(), &values);
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|inner| inner.strip_suffix(')'))
            .and_then(|inner| inner.rsplit_once(','))
            .unwrap_or_else(|| {
                panic!("variable {name}: not label_values(selector, label): {query}")
            });
        let found = prometheus.label_values(selector.trim(), label.trim()).await;
        let wanted: BTreeSet<String> = match name {
            "namespace" => BTreeSet::from([NAMESPACE.to_owned()]),
            "model" => BTreeSet::from([MODEL.to_owned()]),
            "version" => versions.clone(),
            _ => panic!("no expectation for dashboard variable {name:?}: add one"),
        };
        assert!(
            found.is_superset(&wanted),
            "variable {name} ({query}) offers {found:?}"
        );
    }
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = substitute_variables(target["expr"].as_str().unwrap(), &values);
            let answer = prometheus.query(&expr).await;
            let shown: BTreeSet<String> = answer
                .samples()
                .iter()
                .filter_map(|sample| sample.labels.get("version").cloned())
                .collect();
            assert!(
                shown.is_superset(&versions),
                "panel {title:?}: {expr} shows versions {shown:?}: {answer:?}"
            );
        }
    }
}

/// Replaces Grafana's `$name` and `${name}`; any variable left over fails the test.
fn substitute_variables(text: &str, values: &BTreeMap<&str, &str>) -> String {
    let mut resolved = text.to_owned();
    // Longest names first, so that `$version` is not mistaken for a prefix of a longer name.
    let mut names: Vec<&&str> = values.keys().collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    for name in names {
        resolved = resolved
            .replace(&format!("${{{name}}}"), values[name])
            .replace(&format!("${name}"), values[name]);
    }
    assert!(!resolved.contains('$'), "unknown variable in {resolved}");
    resolved
}

// --------------------------------------------------------------------------------------------
// Load
// --------------------------------------------------------------------------------------------

/// The i-th request of a steady mix: the ids go through all 100 of the vocabulary in a scrambled
/// order (7 is coprime with 100), one at a time, so the pruned version fails exactly 5 in 100;
/// one request in 25 is a client's mistake (ids sent as FP32), answered 400, which must not count
/// as an error of the version.
fn request(i: usize) -> Value {
    let id = (i * 7) % 100;
    if i % 25 == 12 {
        json!({"inputs": [{"name": "ids", "datatype": "FP32", "shape": [1], "data": [id as f64]}]})
    } else {
        json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1], "data": [id]}]})
    }
}

/// breast_cancer's i-th request: one row of its test split, in order, the `scaled` feature [`SCALE`]
/// times larger.
fn tumour_request(rows: &[Vec<f64>], i: usize, scaled: Option<usize>) -> Value {
    let mut row = rows[i % rows.len()].clone();
    if let Some(column) = scaled {
        row[column] *= SCALE;
    }
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": row}]})
}

/// Answers by outcome: the HTTP status, or the transport error.
type Tally = BTreeMap<String, usize>;

/// One client per pod with [`Traffic`], sending its requests one at a time.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<(&'static str, tokio::task::JoinHandle<Tally>)>,
}

impl Load {
    fn start(pods: &[Pod]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let rows = Arc::new(tumour_rows());
        let clients = pods
            .iter()
            .filter_map(|pod| {
                let traffic = pod.traffic.clone()?;
                let client = pod.server.client().clone();
                let stop = Arc::clone(&stop);
                let task = match traffic {
                    Traffic::Ids(pace) => {
                        let url = pod.server.url(INFER);
                        tokio::spawn(drive(client, url, pace, stop, request))
                    }
                    Traffic::Tumours { pace, scaled } => {
                        let url = pod.server.url(&format!("/v2/models/{TUMOURS}/infer"));
                        let rows = Arc::clone(&rows);
                        tokio::spawn(drive(client, url, pace, stop, move |i| {
                            tumour_request(&rows, i, scaled)
                        }))
                    }
                };
                Some((pod.hash, task))
            })
            .collect();
        Load { stop, clients }
    }

    async fn stop(self) -> BTreeMap<&'static str, Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut tallies = BTreeMap::new();
        for (hash, client) in self.clients {
            tallies.insert(hash, client.await.unwrap());
        }
        tallies
    }
}

async fn drive(
    client: reqwest::Client,
    url: String,
    pace: Duration,
    stop: Arc<AtomicBool>,
    body: impl Fn(usize) -> Value,
) -> Tally {
    let mut tally = Tally::new();
    let mut pace = tokio::time::interval(pace);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        pace.tick().await;
        let outcome = match client.post(&url).json(&body(i)).send().await {
            Ok(response) => response.status().as_str().to_owned(),
            Err(err) => format!("transport error: {err}"),
        };
        *tally.entry(outcome).or_default() += 1;
    }
    tally
}

// --------------------------------------------------------------------------------------------
// Files
// --------------------------------------------------------------------------------------------

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn read_yaml(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The evaluator keeps expr's semantics where the template's conditions rely on them, and
/// refuses what it does not implement instead of guessing.
#[test]
fn success_conditions_are_evaluated_as_argo_rollouts_does() {
    use condition::{
        Value::{List, Number},
        evaluate,
    };
    let guarded = "len(result) > 0 && !isNaN(result[0]) && result[0] <= 0.02";
    assert_eq!(evaluate(guarded, &List(vec![0.01])), Ok(true));
    assert_eq!(evaluate(guarded, &List(vec![0.05])), Ok(false));
    assert_eq!(evaluate(guarded, &List(vec![f64::NAN])), Ok(false));
    assert_eq!(
        evaluate(guarded, &List(vec![])),
        Ok(false),
        "&& stops before result[0]"
    );
    // Unguarded, an empty result is an error (a measurement error for Argo, not a failure), and
    // NaN compares false with everything, so a bare `result[0] <= limit` fails NaN by accident.
    let unguarded = evaluate("result[0] <= 0.02", &List(vec![]));
    assert!(unguarded.unwrap_err().contains("out of range"));
    assert_eq!(
        evaluate("result[0] > 0.02", &List(vec![f64::NAN])),
        Ok(false)
    );
    assert_eq!(
        evaluate(
            "result[0] > 0.02 || isNaN(result[0])",
            &List(vec![f64::NAN])
        ),
        Ok(true)
    );
    assert_eq!(evaluate("!(result[0] < 0.5)", &List(vec![0.7])), Ok(true));
    assert_eq!(evaluate("result >= 1", &Number(1.0)), Ok(true));
    // With both conditions, a measurement that meets neither is Inconclusive; with only a
    // success condition, it is Failed.
    let success = "len(result) > 0 && !isNaN(result[0]) && result[0] <= 0.1";
    let failure = "len(result) > 0 && result[0] > 0.1";
    for (result, phase) in [
        (vec![0.05], Phase::Successful),
        (vec![0.5], Phase::Failed),
        (vec![], Phase::Inconclusive),
        (vec![f64::NAN], Phase::Inconclusive),
    ] {
        let judged = condition::judge(Some(success), Some(failure), &List(result.clone()));
        assert_eq!(judged, Ok(phase), "{result:?}");
    }
    assert_eq!(
        condition::judge(Some(success), None, &List(vec![])),
        Ok(Phase::Failed)
    );
    assert_eq!(
        condition::judge(None, Some(failure), &List(vec![])),
        Ok(Phase::Successful)
    );
    for unsupported in [
        "result[0] + 1 < 2",
        "asFloat(result) > 0",
        "result[0] < 0.5 and true",
        "result[-1] < 1",
        "len(result)",
        "len(result) > 0 &&",
    ] {
        let verdict = evaluate(unsupported, &List(vec![0.1]));
        assert!(verdict.is_err(), "{unsupported}: {verdict:?}");
    }
}
