//! Static checks of the retraining pipeline in k8s/pipelines/ and the routing that triggers it,
//! with real tools and no cluster: the kustomization renders; every Argo Workflows kind passes
//! the strict CRD schema and every Argo Events kind Argo Events' JSON Schema made strict (and a
//! misspelt field is rejected by each); `amtool check-config` accepts the Alertmanager
//! configuration and routes the drift alert to the pipeline's webhook; and the policies the
//! pipeline relies on hold: every pinserve step runs the image tag k8s/base pins, no credential is
//! written in a manifest, each service has a CronWorkflow and a gate, and the Sensor's own filter
//! expression, evaluated on Alertmanager's payloads, selects a firing PinserveFeatureDrift for one
//! service and nothing else.

// Both are shared with other test binaries, which use parts this one does not.
#[allow(dead_code)]
mod k8s;

#[allow(dead_code)]
#[path = "common/analysis/condition.rs"]
mod condition;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use k8s::{
    PINSERVE_IMAGE, describe, k8s_dir, of_kind, one_of_kind, pinned_image, render, repo, validate,
};
use serde_json::json;
use serde_yaml_ng::Value;

const PIPELINES: &str = "pipelines";
const TEMPLATE: &str = "pinserve-retrain";

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

fn sequence(value: &Value) -> &[Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
}

/// The services: the folders of k8s/services.
fn services() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(k8s_dir().join("services"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    found
}

#[test]
fn pipeline_renders_and_passes_strict_schema_validation() {
    let docs = render(PIPELINES);
    let kinds: BTreeSet<&str> = docs.iter().map(|doc| text(&doc["kind"])).collect();
    for kind in [
        "WorkflowTemplate",
        "CronWorkflow",
        "EventSource",
        "Sensor",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} in k8s/pipelines: {kinds:?}"
        );
    }
    validate(&docs).unwrap_or_else(|err| panic!("{err}"));
}

/// Each validator must reject a misspelt field, or the validation above proves nothing.
#[test]
fn strict_schemas_reject_misspelt_pipeline_fields() {
    let docs = render(PIPELINES);
    let misspell = |kind: &str, edit: &dyn Fn(&mut Value)| {
        let mut doc = of_kind(&docs, kind)[0].clone();
        edit(&mut doc);
        let verdict = validate(std::slice::from_ref(&doc));
        assert!(
            verdict.is_err(),
            "{} with a misspelt field passed validation",
            describe(&doc)
        );
    };
    let rename = |map: &mut Value, from: &str, to: &str| {
        let map = map.as_mapping_mut().unwrap();
        let value = map.remove(from).unwrap_or_else(|| panic!("no {from}"));
        map.insert(to.into(), value);
    };
    misspell("WorkflowTemplate", &|doc| {
        rename(
            &mut doc["spec"]["templates"][0]["steps"][3][0],
            "continueOn",
            "continueon",
        )
    });
    misspell("CronWorkflow", &|doc| {
        rename(&mut doc["spec"], "concurrencyPolicy", "concurencyPolicy")
    });
    misspell("EventSource", &|doc| {
        rename(
            &mut doc["spec"]["webhook"]["alertmanager"],
            "endpoint",
            "endpiont",
        )
    });
    misspell("Sensor", &|doc| {
        rename(
            &mut doc["spec"]["dependencies"][0],
            "eventSourceName",
            "eventsourceName",
        )
    });
}

/// Every step that runs pinserve runs the image k8s/base pins (one tag for serving and the
/// pipeline: a code change bumps both), and every step with pinserve's image runs pinserve.
#[test]
fn pinserve_steps_use_the_pinned_image() {
    let pinned = pinned_image();
    let docs = render(PIPELINES);
    let template = one_of_kind(&docs, "WorkflowTemplate");
    let mut pinserve_steps = BTreeSet::new();
    for step in sequence(&template["spec"]["templates"]) {
        let name = text(&step["name"]);
        let container = if step["container"].is_null() {
            &step["script"]
        } else {
            &step["container"]
        };
        if container.is_null() {
            continue;
        }
        let image = text(&container["image"]);
        let subcommand = container["args"][0].as_str().unwrap_or_default();
        if image.starts_with(PINSERVE_IMAGE) {
            assert_eq!(image, pinned, "step {name}");
            pinserve_steps.insert(name);
        }
        if ["profile", "register", "eval", "promote", "fetch"].contains(&subcommand) {
            assert_eq!(image, pinned, "step {name} runs pinserve {subcommand}");
        }
    }
    for step in ["profile", "register", "evaluate", "promote"] {
        assert!(pinserve_steps.contains(step), "{pinserve_steps:?}");
    }
}

/// Credentials come from Secrets the README names, never from the manifests: no Secret object,
/// no literal value for a variable that holds one, no user or token in a repository URL, and the
/// git artifacts authenticate through Secret references.
#[test]
fn no_credential_is_written_in_a_manifest() {
    let docs = render(PIPELINES);
    assert!(of_kind(&docs, "Secret").is_empty());
    let sensitive = ["TOKEN", "PASSWORD", "SECRET", "CREDENTIAL", "USERNAME"];
    let holds_credential = |name: &str| {
        !name.starts_with("GIT_CONFIG")
            && sensitive
                .iter()
                .any(|word| name.to_uppercase().contains(word))
    };
    let mut checked = 0;
    let mut walk = Vec::from_iter(docs.iter());
    while let Some(value) = walk.pop() {
        match value {
            Value::Mapping(map) => {
                let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
                let literal = map.get("value").and_then(Value::as_str);
                let variable = map.contains_key("valueFrom") || map.contains_key("value");
                if variable && holds_credential(name) {
                    assert!(
                        literal.is_none(),
                        "{name} has a literal value in a manifest"
                    );
                    checked += 1;
                }
                if let Some((_, rest)) = literal.and_then(|value| value.split_once("://")) {
                    let authority = rest.split('/').next().unwrap_or_default();
                    assert!(!authority.contains('@'), "credentials in the URL {rest}");
                }
                walk.extend(map.values());
            }
            Value::Sequence(items) => walk.extend(items),
            _ => {}
        }
    }
    assert!(checked >= 5, "only {checked} credential variables found");
    let template = one_of_kind(&docs, "WorkflowTemplate");
    for step in sequence(&template["spec"]["templates"]) {
        for artifact in step["inputs"]["artifacts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let git = &artifact["git"];
            if git.is_null() {
                continue;
            }
            assert_eq!(git["usernameSecret"]["name"], "pinserve-manifests-git");
            assert_eq!(git["passwordSecret"]["name"], "pinserve-manifests-git");
        }
    }
}

/// The steps run in order, promote only on exit code 0, the alert only on 3, and the run ends
/// failed whenever the version was not promoted; one run per service at a time.
#[test]
fn the_workflow_promotes_only_a_passing_version_and_alerts_on_a_failed_gate() {
    let docs = render(PIPELINES);
    let template = one_of_kind(&docs, "WorkflowTemplate");
    assert_eq!(template["metadata"]["name"], TEMPLATE);
    let spec = &template["spec"];
    let entry = sequence(&spec["templates"])
        .iter()
        .find(|t| t["name"] == spec["entrypoint"])
        .unwrap();
    let order: Vec<Vec<(&str, Option<&str>)>> = sequence(&entry["steps"])
        .iter()
        .map(|group| {
            sequence(group)
                .iter()
                .map(|step| (text(&step["name"]), step["when"].as_str()))
                .collect()
        })
        .collect();
    assert_eq!(
        order,
        [
            vec![("train", None)],
            vec![("profile", None)],
            vec![("register", None)],
            vec![("evaluate", None)],
            vec![
                ("promote", Some("{{steps.evaluate.exitCode}} == 0")),
                ("alert", Some("{{steps.evaluate.exitCode}} == 3")),
            ],
            vec![("rejected", Some("{{steps.evaluate.exitCode}} != 0"))],
        ]
    );
    assert_eq!(
        sequence(&entry["steps"])[3][0]["continueOn"]["failed"],
        true,
        "a failed gate must reach the alert step"
    );
    let mutex = text(&spec["synchronization"]["mutexes"][0]["name"]);
    assert!(mutex.contains("{{workflow.parameters.service}}"), "{mutex}");
}

/// Every service has a weekly CronWorkflow of the template, which never overlaps itself and
/// passes every parameter the template has no default for, with the model its overlays pin; and
/// a gate that pinserve reads, at the path the evaluate step gives.
#[test]
fn every_service_has_its_schedule_and_its_gate() {
    let docs = render(PIPELINES);
    let template = one_of_kind(&docs, "WorkflowTemplate");
    let required: BTreeSet<&str> = sequence(&template["spec"]["arguments"]["parameters"])
        .iter()
        .filter(|p| p["value"].is_null())
        .map(|p| text(&p["name"]))
        .collect();
    let crons = of_kind(&docs, "CronWorkflow");
    assert_eq!(crons.len(), services().len());
    for service in services() {
        let cron = crons
            .iter()
            .find(|c| c["metadata"]["name"] == format!("{service}-retrain").as_str())
            .unwrap_or_else(|| panic!("no CronWorkflow {service}-retrain"));
        let spec = &cron["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Forbid");
        assert_eq!(sequence(&spec["schedules"]).len(), 1);
        assert_eq!(
            spec["workflowSpec"]["workflowTemplateRef"]["name"],
            TEMPLATE
        );
        let given: BTreeMap<&str, &str> =
            sequence(&spec["workflowSpec"]["arguments"]["parameters"])
                .iter()
                .map(|p| (text(&p["name"]), text(&p["value"])))
                .collect();
        for name in &required {
            assert!(given.contains_key(name), "{service}: no {name}");
        }
        assert_eq!(given["service"], service);
        let staging = k8s_dir().join(format!("services/{service}/staging/kustomization.yaml"));
        let overlay = std::fs::read_to_string(&staging).unwrap();
        assert!(
            overlay.contains(&format!("value: {}\n", given["model-name"])),
            "{service}: the CronWorkflow trains {}, which staging does not pin",
            given["model-name"]
        );
        let gate = k8s_dir().join(format!("services/{service}/gate.yaml"));
        pinserve::eval::gate::Gate::read(&gate).unwrap_or_else(|err| panic!("{err}"));
    }
    let evaluate = sequence(&template["spec"]["templates"])
        .iter()
        .find(|t| t["name"] == "evaluate")
        .unwrap();
    let args: Vec<&str> = sequence(&evaluate["container"]["args"])
        .iter()
        .map(text)
        .collect();
    let gate = args[args.iter().position(|a| *a == "--gate").unwrap() + 1];
    assert_eq!(
        gate,
        "/work/manifests/k8s/services/{{workflow.parameters.service}}/gate.yaml"
    );
}

/// Alertmanager's webhook payload (version 4) for one notification of `alertname`.
fn notification(status: &str, alertname: &str, service: Option<&str>) -> serde_json::Value {
    let mut labels = json!({"alertname": alertname, "namespace": "fraud", "severity": "warning"});
    if let Some(service) = service {
        labels["service"] = json!(service);
    }
    json!({
        "version": "4",
        "status": status,
        "receiver": "pinserve-retrain",
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": {},
        "alerts": [{"status": status, "labels": labels, "annotations": {}}],
    })
}

/// A gjson-style dotted path into the event (whose `body` is the notification).
fn lookup<'a>(event: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(event, |value, key| value.get(key))
}

/// Whether the Sensor's dependency accepts `event`: every expr filter, evaluated on its fields
/// as Argo Events binds them (a field whose path is missing fails the filter).
fn sensor_accepts(sensor: &Value, event: &serde_json::Value) -> bool {
    let filters = &sensor["spec"]["dependencies"][0]["filters"];
    assert_eq!(filters["exprLogicalOperator"], "and");
    sequence(&filters["exprs"]).iter().all(|filter| {
        let mut variables = BTreeMap::new();
        for field in sequence(&filter["fields"]) {
            let Some(value) = lookup(event, text(&field["path"])) else {
                return false;
            };
            let value = match value {
                serde_json::Value::String(text) => condition::Value::Text(text.clone()),
                serde_json::Value::Number(number) => {
                    condition::Value::Number(number.as_f64().unwrap())
                }
                other => panic!("unexpected field value {other}"),
            };
            variables.insert(text(&field["name"]).to_owned(), value);
        }
        condition::evaluate_with(text(&filter["expr"]), &variables)
            .unwrap_or_else(|err| panic!("{err}"))
    })
}

/// The Sensor's filter, evaluated on Alertmanager's payloads, retrains a service whose drift
/// alert fires and nothing else; its trigger submits from that service's CronWorkflow.
#[test]
fn the_sensor_retrains_exactly_the_service_whose_drift_alert_fires() {
    let docs = render(PIPELINES);
    let sensor = one_of_kind(&docs, "Sensor");
    let event = |payload| json!({"header": {}, "body": payload});
    assert!(sensor_accepts(
        sensor,
        &event(notification(
            "firing",
            "PinserveFeatureDrift",
            Some("fraud-detection")
        ))
    ));
    for (status, alertname, service) in [
        ("resolved", "PinserveFeatureDrift", Some("fraud-detection")),
        ("firing", "PinservePredictionDrift", Some("fraud-detection")),
        ("firing", "PinserveErrorRateHigh", Some("fraud-detection")),
        ("firing", "PinserveFeatureDrift", None),
        ("firing", "PinserveFeatureDrift", Some("")),
    ] {
        assert!(
            !sensor_accepts(sensor, &event(notification(status, alertname, service))),
            "{status} {alertname} {service:?} must not retrain"
        );
    }
    let dependency = &sensor["spec"]["dependencies"][0];
    let source = one_of_kind(&docs, "EventSource");
    assert_eq!(dependency["eventSourceName"], source["metadata"]["name"]);
    assert!(!source["spec"]["webhook"][text(&dependency["eventName"])].is_null());

    let trigger = &sensor["spec"]["triggers"][0]["template"]["argoWorkflow"];
    assert_eq!(trigger["operation"], "submit-from");
    let resource = &trigger["source"]["resource"];
    assert_eq!(resource["kind"], "CronWorkflow");
    let parameter = &trigger["parameters"][0];
    assert_eq!(parameter["dest"], "metadata.name");
    assert_eq!(parameter["operation"], "prepend");
    let payload = event(notification(
        "firing",
        "PinserveFeatureDrift",
        Some("fraud-detection"),
    ));
    let service = lookup(&payload, text(&parameter["src"]["dataKey"]))
        .and_then(serde_json::Value::as_str)
        .unwrap();
    let submitted = format!("{service}{}", text(&resource["metadata"]["name"]));
    assert!(
        of_kind(&docs, "CronWorkflow")
            .iter()
            .any(|cron| cron["metadata"]["name"] == submitted.as_str()),
        "the Sensor would submit from {submitted}, which does not exist"
    );
}

/// `amtool check-config` accepts the Alertmanager configuration, and its route sends
/// PinserveFeatureDrift with a service to the pipeline's webhook, at the EventSource's address.
#[test]
fn alertmanager_routes_drift_alerts_to_the_pipeline() {
    let config = k8s_dir().join("monitoring/alertmanager-pinserve.yaml");
    let amtool = std::env::var_os("PINSERVE_AMTOOL").unwrap_or_else(|| "amtool".into());
    let run = |args: &[&str]| {
        let output = Command::new(&amtool)
            .args(args)
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run amtool: {err}; install Debian's prometheus-alertmanager (scripts/test.sh does)")
            });
        assert!(
            output.status.success(),
            "amtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let path = config.to_str().unwrap();
    run(&["check-config", path]);
    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", "--config.file", path];
        args.extend_from_slice(labels);
        run(&args).trim().to_owned()
    };
    let drift = route(&["alertname=PinserveFeatureDrift", "service=fraud-detection"]);
    assert!(drift.contains("pinserve-retrain"), "{drift}");
    for labels in [
        vec!["alertname=PinserveFeatureDrift"],
        vec!["alertname=PinserveErrorRateHigh", "service=fraud-detection"],
    ] {
        let receivers = route(&labels);
        assert!(
            !receivers.contains("pinserve-retrain"),
            "{labels:?}: {receivers}"
        );
    }

    let alertmanager: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let receiver = sequence(&alertmanager["receivers"])
        .iter()
        .find(|r| r["name"] == "pinserve-retrain")
        .unwrap();
    let url = text(&receiver["webhook_configs"][0]["url"]);
    let docs = render(PIPELINES);
    let source = one_of_kind(&docs, "EventSource");
    let webhook = &source["spec"]["webhook"]["alertmanager"];
    let namespace = text(&source["metadata"]["namespace"]);
    let expected = format!(
        "http://{}-eventsource-svc.{namespace}.svc:{}{}",
        text(&source["metadata"]["name"]),
        text(&webhook["port"]),
        text(&webhook["endpoint"])
    );
    assert_eq!(url, expected);
    assert!(repo().join("k8s/pipelines/kustomization.yaml").is_file());
}

/// Argo CD deploys the pipeline as its own Application, in a project of its own that allows the
/// kinds k8s/pipelines renders, in the namespace it renders into, and nothing more (the model
/// services' project cannot create Roles).
#[test]
fn argo_cd_deploys_the_pipeline_in_a_project_of_its_own() {
    let app: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(k8s_dir().join("argocd/apps/pipelines.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(app["spec"]["source"]["path"], "k8s/pipelines");
    assert_eq!(app["spec"]["project"], "pinserve-pipelines");
    let docs = render(PIPELINES);
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .map(|doc| text(&doc["metadata"]["namespace"]))
        .collect();
    assert_eq!(
        namespaces,
        BTreeSet::from([text(&app["spec"]["destination"]["namespace"])])
    );
    let projects = render("argocd");
    let project = |name: &str| {
        projects
            .iter()
            .find(|doc| doc["kind"] == "AppProject" && doc["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no AppProject {name}"))
    };
    let allowed = |project: &Value| -> BTreeSet<(String, String)> {
        sequence(&project["spec"]["namespaceResourceWhitelist"])
            .iter()
            .map(|r| (text(&r["group"]).to_owned(), text(&r["kind"]).to_owned()))
            .collect()
    };
    let rendered: BTreeSet<(String, String)> = docs
        .iter()
        .map(|doc| {
            let api_version = text(&doc["apiVersion"]);
            let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
            (group.to_owned(), text(&doc["kind"]).to_owned())
        })
        .collect();
    let pipelines = project("pinserve-pipelines");
    assert_eq!(allowed(pipelines), rendered);
    assert_eq!(
        pipelines["spec"]["destinations"][0]["namespace"],
        app["spec"]["destination"]["namespace"]
    );
    let services = allowed(project("pinserve"));
    assert!(
        !services
            .iter()
            .any(|(group, _)| group == "rbac.authorization.k8s.io"),
        "{services:?}"
    );
}
