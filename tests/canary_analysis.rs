//! The canary analysis, the alerts and the dashboard, proven against a real Prometheus scraping
//! real pinserve processes.
//!
//! Versions of `embedding_lookup` stand for a rollout's ReplicaSets: version 1 is good; version 2
//! has its table pruned to 95 ids, so ONNX Runtime fails the requests for ids 95-99 (500s, 5% of
//! the traffic); version 3 answers like version 1 after about a second of work. Prometheus scrapes
//! each process every second with the labels the PodMonitor gives a pod (`namespace`, `pod`,
//! `rollouts_pod_template_hash`, and a `job` named as the Prometheus Operator names it).
//!
//! - k8s/base/analysis-template.yaml: its own queries, with `{{args.*}}` substituted, run
//!   through Prometheus's HTTP API and judged by its own `successCondition`s (see
//!   `common::analysis::condition`): version 1 passes, versions 2 and 3 fail, and so do a hash
//!   without series and a version without requests in the window (NaN).
//! - k8s/monitoring/prometheusrule.yaml: loaded into Prometheus's rule engine; each alert must
//!   become active for the degraded process it is about, and the SLO alerts for no healthy one.
//! - k8s/monitoring/grafana-dashboard.json: every panel query and template variable, with the
//!   variables substituted, must select series of every version.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Server,
    analysis::{
        condition,
        prometheus::{Alert, Answer, Prometheus, Target, poll},
    },
};
use serde_json::{Value, json};

const NAMESPACE: &str = "canary-test";
/// The Prometheus Operator names a PodMonitor's job `<namespace>/<PodMonitor name>`.
const JOB: &str = "canary-test/pinserve";
const MODEL: &str = "embedding_lookup";
const INFER: &str = "/v2/models/embedding_lookup/infer";

/// Pod template hashes, one per process; `ABSENT` has no process at all.
const STABLE: &str = "stable";
const PRUNED: &str = "pruned";
const SLOW: &str = "slow";
const IDLE: &str = "idle";
const DRAINING: &str = "draining";
const BROKEN: &str = "broken";
const ABSENT: &str = "absent";

/// How long Prometheus may take to show what the load produced (it needs seconds, not minutes).
const DATA_TIMEOUT: Duration = Duration::from_secs(60);

/// A pinserve process standing for one pod of a ReplicaSet.
struct Pod {
    hash: &'static str,
    name: String,
    server: Server,
}

impl Pod {
    fn start(model: &str, version: &str, hash: &'static str, extra: &[&str]) -> Pod {
        Pod {
            hash,
            name: format!("{}-{hash}-0", model.replace('_', "-")),
            server: Server::start_fixture(model, version, extra),
        }
    }

    fn target(&self) -> Target {
        Target {
            address: self.server.address,
            labels: BTreeMap::from([
                ("namespace", NAMESPACE.to_owned()),
                ("pod", self.name.clone()),
                ("rollouts_pod_template_hash", self.hash.to_owned()),
            ]),
        }
    }
}

/// The pods of the scenario, one process each.
struct Fleet {
    stable: Pod,
    pruned: Pod,
    slow: Pod,
    idle: Pod,
    draining: Pod,
    broken: Pod,
}

impl Fleet {
    /// Starts every pod and brings each into its state before Prometheus first scrapes them.
    async fn start() -> Fleet {
        let fleet = Fleet {
            stable: Pod::start(MODEL, "1", STABLE, &[]),
            pruned: Pod::start(MODEL, "2", PRUNED, &[]),
            // One thread, so that the slow version's cost does not depend on the number of cores.
            slow: Pod::start(MODEL, "3", SLOW, &["--intra-op-threads", "1"]),
            idle: Pod::start(MODEL, "1", IDLE, &[]),
            draining: Pod::start(MODEL, "1", DRAINING, &["--drain-seconds", "600"]),
            // A model ONNX Runtime refuses: pinserve reports failed and exits, like a
            // crash-looping pod.
            broken: Pod::start("broken", "1", BROKEN, &[]),
        };
        for pod in [
            &fleet.stable,
            &fleet.pruned,
            &fleet.slow,
            &fleet.idle,
            &fleet.draining,
        ] {
            pod.server.wait_ready().await;
        }
        assert_slow_enough(&fleet.slow).await;
        // The idle version answers these before Prometheus first scrapes it: its counters exist
        // but never move in the window, so its rates are 0 and its error ratio is 0/0.
        for i in 0..20 {
            let (status, body) = fleet.idle.server.post_json(INFER, &request(i * 25)).await;
            assert_eq!(status, 200, "{body}");
        }
        fleet.draining.server.signal("TERM");
        fleet.draining.server.wait_for_health("draining").await;
        fleet
    }

    fn targets(&self) -> Vec<Target> {
        [
            &self.stable,
            &self.pruned,
            &self.slow,
            &self.idle,
            &self.draining,
            &self.broken,
        ]
        .iter()
        .map(|pod| pod.target())
        .collect()
    }
}

#[tokio::test]
async fn canary_analysis_alerts_and_dashboard_against_real_prometheus() {
    let started = Instant::now();
    let metrics = analysis_metrics();
    let rules = read_yaml("k8s/monitoring/prometheusrule.yaml")["spec"].clone();
    let dashboard: Value = serde_json::from_str(&read("k8s/monitoring/grafana-dashboard.json"))
        .expect("the dashboard is not JSON");

    let fleet = Fleet::start().await;
    let prometheus = Prometheus::start(JOB, &fleet.targets(), &rules).await;
    let load = Load::start(&[&fleet.stable, &fleet.pruned, &fleet.slow]);
    wait_for_traffic(&prometheus).await;

    check_analysis(&prometheus, &metrics).await;
    check_alerts(&prometheus, &rules, &fleet.broken).await;
    check_dashboard(&prometheus, &dashboard).await;

    let tallies = load.stop().await;
    eprintln!("answers the load got: {tallies:?}");
    for (hash, tally) in &tallies {
        let codes: BTreeSet<&str> = tally.keys().map(String::as_str).collect();
        let expected = if *hash == PRUNED {
            BTreeSet::from(["200", "400", "500"])
        } else {
            BTreeSet::from(["200", "400"])
        };
        assert!(codes.is_subset(&expected), "{hash}: {tally:?}");
    }
    assert!(tallies[PRUNED].contains_key("500"), "{tallies:?}");
    eprintln!("canary analysis test took {:?}", started.elapsed());
}

/// The verdicts Argo Rollouts must reach, per metric of the template, for each hash.
fn expected_verdict(metric: &str, hash: &str) -> bool {
    match (metric, hash) {
        (_, STABLE) => true,
        ("error-rate", PRUNED) | ("p99-latency", SLOW) => false,
        // Each metric judges its own dimension: fast 500s do not break the p99, slow 200s are
        // no errors.
        ("error-rate", SLOW) | ("p99-latency", PRUNED) => true,
        (_, IDLE | ABSENT) => false,
        _ => panic!("no expectation for metric {metric:?} on {hash:?}: add one"),
    }
}

/// Runs every metric of the template for each hash, as an AnalysisRun's measurement would, and
/// compares Argo's verdict with the expected one; then checks what made the no-data cases fail.
async fn check_analysis(prometheus: &Prometheus, metrics: &[AnalysisMetric]) {
    for metric in metrics {
        for hash in [STABLE, PRUNED, SLOW, IDLE, ABSENT] {
            let (answer, verdict) = metric.measure(prometheus, hash).await;
            let verdict = verdict.unwrap_or_else(|err| {
                panic!(
                    "{}: {:?} cannot be evaluated: {err}",
                    metric.name, metric.success
                )
            });
            eprintln!(
                "{} for {hash}: {} -> {verdict}",
                metric.name,
                answer.as_result()
            );
            assert_eq!(
                verdict,
                expected_verdict(&metric.name, hash),
                "{} for {hash}: result {} judged by {:?}",
                metric.name,
                answer.as_result(),
                metric.success
            );
        }
        let (absent, _) = metric.measure(prometheus, ABSENT).await;
        assert!(absent.samples().is_empty(), "{}: {absent:?}", metric.name);
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
/// hundred requests on the fast versions (so 5% of errors is a dozen), a few on the slow one.
/// `increase()` counts only what happened between scrapes, as `rate()` in the analysis does; a
/// plain counter could already be high at a late first scrape, with nothing yet to take a rate of.
async fn wait_for_traffic(prometheus: &Prometheus) {
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
        let enough = count(STABLE, "") >= 200.0
            && count(PRUNED, "") >= 200.0
            && count(PRUNED, "5") >= 10.0
            && count(SLOW, "") >= 4.0;
        if enough {
            Ok(())
        } else {
            Err(format!("{:?}", answer.samples()))
        }
    })
    .await;
}

/// Version 3 must break the p99 limit by itself, on this machine too.
async fn assert_slow_enough(slow: &Pod) {
    let started = Instant::now();
    let (status, body) = slow.server.post_json(INFER, &request(0)).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        elapsed > Duration::from_millis(600),
        "embedding_lookup version 3 answered in {elapsed:?}: this CPU is too fast for the \
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
    address: String,
    query: String,
    default_args: BTreeMap<String, String>,
}

impl AnalysisMetric {
    /// One measurement for `hash`: the query with the Rollout's arguments substituted, run at
    /// the address the template names (this Prometheus's, through `prometheus-address`), and the
    /// success condition's verdict on the answer.
    async fn measure(&self, prometheus: &Prometheus, hash: &str) -> (Answer, Result<bool, String>) {
        let mut args = self.default_args.clone();
        args.insert("canary-hash".to_owned(), hash.to_owned());
        args.insert("prometheus-address".to_owned(), prometheus.url.clone());
        assert_eq!(substitute_args(&self.address, &args), prometheus.url);
        let answer = prometheus.query(&substitute_args(&self.query, &args)).await;
        let verdict = condition::evaluate(&self.success, &answer.as_result());
        (answer, verdict)
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
        ["canary-hash", "prometheus-address"],
        "the Rollout passes canary-hash; prometheus-address has a default"
    );
    assert_eq!(args["canary-hash"], None);
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
                address: text(&prometheus["address"], "provider.prometheus.address"),
                query: text(&prometheus["query"], "provider.prometheus.query"),
                default_args: default_args.clone(),
            }
        })
        .collect();
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["error-rate", "p99-latency"]);
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

/// Each alert must become active (pending: their `for` is minutes) for the degraded process it
/// is about, and stay quiet for the healthy ones. No alert may be left without such a case.
/// TargetDown's quiet side is not asserted: it is `up`, Prometheus's own, and a healthy target's
/// scrape may time out now and then on a loaded machine.
async fn check_alerts(prometheus: &Prometheus, rules: &serde_yaml_ng::Value, broken: &Pod) {
    let expected = [
        ("PinserveErrorRateHigh", "version", "2"),
        ("PinserveLatencyP99High", "version", "3"),
        ("PinserveNotReady", "rollouts_pod_template_hash", DRAINING),
        ("PinserveTargetDown", "pod", broken.name.as_str()),
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
        expected.iter().map(|(name, ..)| *name).collect(),
        "every alert needs a degraded case here"
    );
    let alerts = poll(
        "every alert active for its case",
        DATA_TIMEOUT,
        async || {
            let alerts = prometheus.alerts().await;
            let missing: Vec<_> = expected
                .iter()
                .filter(|(name, label, value)| !alerts.iter().any(|a| is(a, name, label, value)))
                .collect();
            if missing.is_empty() {
                Ok(alerts)
            } else {
                Err(format!("missing {missing:?}; active: {alerts:?}"))
            }
        },
    )
    .await;
    let active =
        |name: &str, label: &str, value: &str| alerts.iter().any(|a| is(a, name, label, value));
    for version in ["1", "3"] {
        assert!(
            !active("PinserveErrorRateHigh", "version", version),
            "{alerts:?}"
        );
    }
    for version in ["1", "2"] {
        assert!(
            !active("PinserveLatencyP99High", "version", version),
            "{alerts:?}"
        );
    }
    for hash in [STABLE, PRUNED, SLOW, IDLE] {
        assert!(
            !active("PinserveNotReady", "rollouts_pod_template_hash", hash),
            "{alerts:?}"
        );
    }
    for (name, health, error) in prometheus.rule_health().await {
        assert_eq!(health, "ok", "rule {name}: {error}");
    }
}

fn is(alert: &Alert, name: &str, label: &str, value: &str) -> bool {
    alert.name == name
        && alert.labels.get(label).map(String::as_str) == Some(value)
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

/// Answers by outcome: the HTTP status, or the transport error.
type Tally = BTreeMap<String, usize>;

/// Clients sending [`request`]s to some pods, one at a time each, at most 50 a second.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<(&'static str, tokio::task::JoinHandle<Tally>)>,
}

impl Load {
    fn start(pods: &[&Pod]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = pods
            .iter()
            .map(|pod| {
                let client = pod.server.client().clone();
                let url = pod.server.url(INFER);
                (
                    pod.hash,
                    tokio::spawn(drive(client, url, Arc::clone(&stop))),
                )
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

async fn drive(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::new();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        pace.tick().await;
        let outcome = match client.post(&url).json(&request(i)).send().await {
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
