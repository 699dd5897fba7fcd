//! A real Prometheus (Debian's `prometheus` package, which scripts/test.sh installs), run in the
//! foreground on a loopback port with its data in a temporary directory, scraping pinserve
//! processes every second, and queried through its HTTP API as Argo Rollouts and Grafana query
//! it. Dropping it kills the process: none outlives its test.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use super::condition;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One scrape target, with the labels the PodMonitor's relabelling would give it (`namespace`,
/// `pod`, `rollouts_pod_template_hash`); the job's name supplies `job`.
pub struct Target {
    pub address: SocketAddr,
    pub labels: BTreeMap<&'static str, String>,
}

/// One sample of an instant vector.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// An instant query's answer, in the two shapes Argo Rollouts' Prometheus provider accepts.
#[derive(Debug, Clone)]
pub enum Answer {
    Vector(Vec<Sample>),
    Scalar(f64),
}

impl Answer {
    /// The value Argo Rollouts binds to `result` in a condition.
    pub fn as_result(&self) -> condition::Value {
        match self {
            Answer::Vector(samples) => {
                condition::Value::List(samples.iter().map(|sample| sample.value).collect())
            }
            Answer::Scalar(value) => condition::Value::Number(*value),
        }
    }

    pub fn samples(&self) -> &[Sample] {
        match self {
            Answer::Vector(samples) => samples,
            Answer::Scalar(_) => panic!("expected an instant vector, got a scalar: {self:?}"),
        }
    }
}

/// An alert Prometheus's rule engine holds: `pending` until its `for` has passed, then `firing`.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    pub state: String,
    pub labels: BTreeMap<String, String>,
}

pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    pub url: String,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second under the job `job`, evaluating `rules`
    /// (the `spec` of a PrometheusRule: `groups: [...]`) every second, and waits until it is
    /// ready.
    pub async fn start(job: &str, targets: &[Target], rules: &serde_yaml_ng::Value) -> Prometheus {
        let binary = find_binary("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.yaml");
        std::fs::write(&rules_path, serde_yaml_ng::to_string(rules).unwrap()).unwrap();
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules_path],
            "scrape_configs": [{
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": targets.iter().map(|target| json!({
                    "targets": [target.address.to_string()],
                    "labels": target.labels,
                })).collect::<Vec<_>>(),
            }],
        });
        // JSON is YAML, and Prometheus reads YAML.
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let address = free_loopback_address();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start prometheus");
        let mut prometheus = Prometheus {
            child,
            dir,
            url: format!("http://{address}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/-/ready", self.url);
        crate::common::wait_until(
            "prometheus to be ready",
            START_TIMEOUT,
            Duration::from_millis(100),
            async || {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("prometheus exited ({status}): {}", self.log());
                }
                match self.client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    answer => Err(format!("{answer:?}; log: {}", self.log())),
                }
            },
        )
        .await;
    }

    /// Prometheus's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GETs an API path and returns its `data`, failing the test on any error Prometheus reports.
    async fn api(&self, path: &str, parameters: &[(&str, &str)]) -> Value {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.url), parameters).unwrap();
        let response = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["status"], "success",
            "GET {path} {parameters:?}: {body}"
        );
        body["data"].clone()
    }

    /// An instant query at the current time, as Argo Rollouts' provider runs it.
    pub async fn query(&self, promql: &str) -> Answer {
        let data = self.api("/api/v1/query", &[("query", promql)]).await;
        match data["resultType"].as_str() {
            Some("vector") => Answer::Vector(
                data["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|sample| Sample {
                        labels: serde_json::from_value(sample["metric"].clone()).unwrap(),
                        value: sample_value(&sample["value"]),
                    })
                    .collect(),
            ),
            Some("scalar") => Answer::Scalar(sample_value(&data["result"])),
            _ => panic!("{promql}: unexpected answer {data}"),
        }
    }

    /// The values of `label` on the series `selector` selects, as Grafana's `label_values()`.
    pub async fn label_values(&self, selector: &str, label: &str) -> BTreeSet<String> {
        let data = self
            .api(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", selector)],
            )
            .await;
        serde_json::from_value(data).unwrap()
    }

    /// The alerts the rule engine currently holds (pending or firing).
    pub async fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(alert["labels"].clone()).unwrap();
                Alert {
                    name: labels["alertname"].clone(),
                    state: alert["state"].as_str().unwrap().to_owned(),
                    labels,
                }
            })
            .collect()
    }

    /// Every rule's name, health (`ok`, `err`, `unknown`) and last evaluation error.
    pub async fn rule_health(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/rules", &[]).await;
        let groups = data["groups"].as_array().unwrap();
        groups
            .iter()
            .flat_map(|group| group["rules"].as_array().unwrap())
            .map(|rule| {
                let text = |key: &str| rule[key].as_str().unwrap_or_default().to_owned();
                (text("name"), text("health"), text("lastError"))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus writes sample values as strings, NaN and infinities included.
fn sample_value(pair: &Value) -> f64 {
    let text = pair[1]
        .as_str()
        .unwrap_or_else(|| panic!("bad sample {pair}"));
    text.parse()
        .unwrap_or_else(|err| panic!("bad sample value {text:?}: {err}"))
}

/// A loopback address nobody listens on right now (the kernel picks the port).
fn free_loopback_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `name` on the PATH, or a failure saying how to install it.
fn find_binary(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: install Debian's `prometheus` package \
                 (`apt-get install prometheus`), as scripts/test.sh does"
            )
        })
}

/// Retries `attempt` every 250 ms until it gives a value, failing the test after `timeout` with
/// `what` and the last attempt's explanation.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    crate::common::wait_until(what, timeout, Duration::from_millis(250), attempt).await
}
