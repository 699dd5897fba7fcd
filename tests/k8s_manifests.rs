//! Static checks of the GitOps deployment in k8s/, with real tools and no cluster: every
//! kustomization renders with kubectl's kustomize, every rendered object passes strict schema
//! validation (and the validators are shown to reject a misspelt field), and every environment
//! of every model service keeps the rules the deployment relies on: honest probes, a non-root
//! read-only pod, limits, a pinned image, a model fetched into an emptyDir and pinned in the pod
//! template, a termination grace above pinserve's drain plus shutdown grace, request bodies
//! bounded to fit the memory limit, a canary gated on the analysis, names that still connect
//! after prefixing, and Argo CD applications that sync staging by themselves and never delete
//! production.

// Shared with tests/pipeline_manifests.rs and tests/kserve_runtime.rs, which use parts this file
// does not (the pinned image: here every rendered container is checked directly).
#[allow(dead_code)]
mod k8s;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use k8s::{
    describe, k8s_dir, of_kind, one_of_kind, parse_documents, read_documents, render, try_render,
    validate,
};
use serde_yaml_ng::Value;

const SERVICES: [&str; 3] = [
    "product-recommendation",
    "fraud-detection",
    "churn-prediction",
];
const ENVIRONMENTS: [&str; 2] = ["staging", "production"];
/// The init container and the serving container of the base Rollout.
const FETCH: &str = "fetch-model";
const SERVE: &str = "pinserve";
/// pinserve's defaults, for flags a manifest leaves out.
const DEFAULT_DRAIN_SECONDS: i64 = 5;
const DEFAULT_SHUTDOWN_GRACE_SECONDS: i64 = 30;
const DEFAULT_MAX_BODY_BYTES: u64 = 64 << 20;
/// Peak memory per byte of request bodies held at once, the largest `cargo bench --bench memory`
/// measured (binary BYTES for churn_pipeline; BENCHMARKS.md, "Request memory").
const REQUEST_MEMORY_PER_BODY_BYTE: u64 = 17;
const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";

fn service_env(service: &str, env: &str) -> String {
    format!("services/{service}/{env}")
}

/// Every (service, environment) folder under k8s/services.
fn service_folders() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for service in std::fs::read_dir(k8s_dir().join("services")).unwrap() {
        let service = service.unwrap();
        // Besides its environments, a service's folder holds its promotion gate (gate.yaml).
        for env in std::fs::read_dir(service.path()).unwrap() {
            let env = env.unwrap();
            if !env.file_type().unwrap().is_dir() {
                continue;
            }
            found.push((
                service.file_name().into_string().unwrap(),
                env.file_name().into_string().unwrap(),
            ));
        }
    }
    found.sort();
    found
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
}

fn container<'a>(rollout: &'a Value, list: &str, name: &str) -> &'a Value {
    rollout["spec"]["template"]["spec"][list]
        .as_sequence()
        .and_then(|containers| containers.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{}: no {list} entry named {name}", describe(rollout)))
}

fn all_containers(rollout: &Value) -> Vec<&Value> {
    let spec = &rollout["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|list| spec[*list].as_sequence())
        .flatten()
        .collect()
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_sequence()
        .map(|args| args.iter().map(|arg| arg.as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// The value of `--flag=VALUE` (or `--flag VALUE`) among a container's arguments.
fn flag<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let args = args(container);
    let prefix = format!("{name}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        arg.strip_prefix(&prefix)
            .or_else(|| (*arg == name).then(|| args.get(i + 1).copied()).flatten())
    })
}

/// The container's environment entry `name` (with its `value` or `valueFrom`).
fn env_entry<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|var| var["name"] == name)
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    env_entry(container, name).and_then(|var| var["value"].as_str())
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

fn pod_labels(rollout: &Value) -> BTreeMap<String, String> {
    labels(&rollout["spec"]["template"]["metadata"]["labels"])
}

fn int(value: &Value, what: &str) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {value:?}"))
}

#[test]
fn every_kustomization_renders() {
    let rendered: Vec<String> = k8s::kustomizations()
        .iter()
        .filter(|dir| !is_component(dir))
        .map(|dir| {
            let relative = dir.strip_prefix(k8s_dir()).unwrap().to_str().unwrap();
            assert!(
                !render(relative).is_empty(),
                "k8s/{relative} renders nothing"
            );
            relative.to_owned()
        })
        .collect();
    let mut expected = vec![
        "argocd".to_owned(),
        "argocd/applicationset".to_owned(),
        "base".to_owned(),
        "monitoring".to_owned(),
        "overlays/production".to_owned(),
        "overlays/staging".to_owned(),
    ];
    for service in SERVICES {
        for env in ENVIRONMENTS {
            expected.push(service_env(service, env));
        }
    }
    for folder in expected {
        assert!(
            rendered.contains(&folder),
            "k8s/{folder} has no kustomization"
        );
    }
}

/// A kustomize Component (k8s/components/): it renders only inside a kustomization that
/// includes it.
fn is_component(dir: &Path) -> bool {
    read_documents(&dir.join("kustomization.yaml")).remove(0)["kind"] == "Component"
}

/// Every object Argo CD would apply: each kustomization's output and the child Applications the
/// root reads as a plain directory.
#[test]
fn every_object_passes_strict_schema_validation() {
    let mut docs = Vec::new();
    for dir in k8s::kustomizations() {
        docs.extend(render(
            dir.strip_prefix(k8s_dir()).unwrap().to_str().unwrap(),
        ));
    }
    for app in std::fs::read_dir(k8s_dir().join("argocd/apps")).unwrap() {
        docs.extend(read_documents(&app.unwrap().path()));
    }
    validate(&docs).unwrap_or_else(|err| panic!("{err}"));
}

fn staging_application() -> Value {
    read_documents(&k8s_dir().join("argocd/apps/fraud-detection-staging.yaml")).remove(0)
}

fn assert_rejected(doc: Value, field: &str) {
    let err = validate(&[doc]).expect_err("the misspelt document was accepted");
    assert!(
        err.contains(field),
        "the validator rejected the document, but not for {field}:\n{err}"
    );
}

/// The API server would silently prune `selfheal` (for `selfHeal`), leaving staging without
/// self-healing; the strict schema refuses it.
#[test]
fn strict_argo_schema_rejects_a_misspelt_sync_option() {
    let mut app = staging_application();
    validate(std::slice::from_ref(&app)).unwrap_or_else(|err| panic!("{err}"));
    app["spec"]["syncPolicy"]["automated"]
        .as_mapping_mut()
        .unwrap()
        .insert("selfheal".into(), true.into());
    assert_rejected(app, "selfheal");
}

#[test]
fn strict_kubernetes_schema_rejects_a_misspelt_field() {
    let docs = render("services/fraud-detection/production");
    let mut service = named(&docs, "Service", "fraud-detection-pinserve")
        .unwrap()
        .clone();
    service["spec"]["ports"][0]
        .as_mapping_mut()
        .unwrap()
        .insert("targetport".into(), "http".into());
    assert_rejected(service, "targetport");
}

#[test]
fn prometheus_operator_schema_rejects_a_misspelt_field() {
    let docs = render("services/fraud-detection/production");
    let mut monitor = one_of_kind(&docs, "PodMonitor").clone();
    let relabeling = &mut monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
    let source = relabeling
        .as_mapping_mut()
        .unwrap()
        .remove("sourceLabels")
        .unwrap();
    relabeling
        .as_mapping_mut()
        .unwrap()
        .insert("sourcelabels".into(), source);
    assert_rejected(monitor, "sourcelabels");
}

/// The serving container's ports (HTTP, and gRPC where --grpc-listen says) and probes: /health
/// for start-up and readiness, /livez for liveness, on the port pinserve listens on; the start-up
/// budget covers a large model's load and warm-up.
fn check_probes(rollout: &Value) {
    let serve = container(rollout, "containers", SERVE);
    let listen_port = named_port(serve, "http", "--listen", 8080);
    named_port(serve, "grpc", "--grpc-listen", 8081);
    for (probe, path) in [
        ("startupProbe", "/health"),
        ("readinessProbe", "/health"),
        ("livenessProbe", "/livez"),
    ] {
        let get = &serve[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert!(
            get["port"] == "http" || get["port"].as_i64() == Some(listen_port),
            "{probe} port {:?}",
            get["port"]
        );
    }
    let startup = &serve["startupProbe"];
    let budget = int(&startup["failureThreshold"], "failureThreshold")
        * int(&startup["periodSeconds"], "periodSeconds");
    assert!(budget >= 600, "startupProbe allows only {budget}s to load");
}

/// The container port named `name`, checked against the port of the listen flag `flag` (or its
/// default).
fn named_port(container: &Value, name: &str, flag_name: &str, default: i64) -> i64 {
    let port = container["ports"]
        .as_sequence()
        .expect("no ports")
        .iter()
        .find(|port| port["name"] == name)
        .unwrap_or_else(|| panic!("no port named {name}"));
    let listen_port = flag(container, flag_name).map_or(default, |listen| {
        listen.rsplit(':').next().unwrap().parse().unwrap()
    });
    assert_eq!(int(&port["containerPort"], "containerPort"), listen_port);
    listen_port
}

/// Non-root, no privilege escalation, read-only root, no capabilities, RuntimeDefault seccomp,
/// on every container.
fn check_security(rollout: &Value) {
    let pod = &rollout["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true, "pod runAsNonRoot");
    for c in all_containers(rollout) {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}: runAsNonRoot");
        assert!(
            int(&sc["runAsUser"], "runAsUser") > 0,
            "{name}: runAsUser must be a non-zero uid"
        );
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        let drop = sc["capabilities"]["drop"].as_sequence().expect("drop");
        assert!(drop.iter().any(|cap| cap == "ALL"), "{name}: drop ALL");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert_ne!(sc["privileged"], true, "{name}");
    }
}

/// Requests and limits for CPU and memory on every container; requests within limits.
fn check_resources(rollout: &Value) {
    for c in all_containers(rollout) {
        let name = c["name"].as_str().unwrap();
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !c["resources"][kind][resource].is_null(),
                    "{name}: no {kind}.{resource}"
                );
            }
        }
    }
}

/// Every container runs the same pinned pinserve image: a tag that is not `latest`, or a digest.
fn check_image(rollout: &Value) {
    let images: BTreeSet<&str> = all_containers(rollout)
        .iter()
        .map(|c| c["image"].as_str().expect("no image"))
        .collect();
    assert_eq!(
        images.len(),
        1,
        "containers run different images: {images:?}"
    );
    let image = images.into_iter().next().unwrap();
    let (repository, pin) = image
        .rsplit_once('@')
        .or_else(|| image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')))
        .unwrap_or_else(|| panic!("image {image} has no tag"));
    assert!(repository.ends_with("/pinserve"), "image {image}");
    assert!(
        !pin.is_empty() && pin != "latest",
        "image {image} is not pinned"
    );
}

/// The model is not in the image: the init container fetches the version and digest pinned in
/// its environment into an emptyDir, and the serving container loads that directory read-only.
fn check_model_source(rollout: &Value, service: &str) {
    let spec = &rollout["spec"]["template"]["spec"];
    let volumes = spec["volumes"].as_sequence().expect("no volumes");
    for volume in volumes {
        let sources: Vec<&str> = volume
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(|key| key.as_str())
            .filter(|key| *key != "name")
            .collect();
        assert!(
            sources
                .iter()
                .all(|source| ["emptyDir", "configMap", "secret", "projected"].contains(source)),
            "volume {:?} uses {sources:?}; the pod must not reach into the node",
            volume["name"]
        );
    }
    let fetch = container(rollout, "initContainers", FETCH);
    let serve = container(rollout, "containers", SERVE);
    assert_eq!(args(fetch).first(), Some(&"fetch"));
    assert_eq!(args(serve).first(), Some(&"serve"));
    for remote in ["--model-uri", "--model-repository", "--registry-uri"] {
        assert!(
            flag(serve, remote).is_none(),
            "serve must not fetch: {remote}"
        );
    }
    assert_eq!(flag(fetch, "--model-name"), Some("$(MODEL_NAME)"));
    assert_eq!(flag(fetch, "--model-version"), Some("$(MODEL_VERSION)"));
    assert_eq!(env_value(fetch, "MODEL_NAME"), Some(service));
    let version = env_value(fetch, "MODEL_VERSION").expect("MODEL_VERSION is not a literal");
    assert!(
        version.parse::<u64>().is_ok_and(|v| v > 0),
        "MODEL_VERSION {version:?} is not a registry version number"
    );
    // The digest pins the model's bytes as an image digest pins an image's: the base leaves it
    // empty (not pinned), every service overlay pins one.
    assert_eq!(flag(fetch, "--model-sha256"), Some("$(MODEL_SHA256)"));
    let digest = env_value(fetch, "MODEL_SHA256").expect("MODEL_SHA256 is not a literal");
    assert!(
        digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "MODEL_SHA256 {digest:?} is not a pinned SHA-256 digest (64 lowercase hexadecimal digits)"
    );
    let dest = flag(fetch, "--dest").expect("fetch has no --dest");
    let model_dir = flag(serve, "--model-dir").expect("serve has no --model-dir");
    assert_eq!(dest, model_dir, "serve must load what fetch wrote");
    let mount = |c: &Value| -> (String, bool) {
        let m = c["volumeMounts"]
            .as_sequence()
            .and_then(|mounts| mounts.iter().find(|m| m["mountPath"] == dest))
            .unwrap_or_else(|| panic!("{:?} does not mount {dest}", c["name"]));
        (
            m["name"].as_str().unwrap().to_owned(),
            m["readOnly"] == true,
        )
    };
    let (fetch_volume, _) = mount(fetch);
    let (serve_volume, read_only) = mount(serve);
    assert_eq!(fetch_volume, serve_volume);
    assert!(read_only, "serve must mount the model read-only");
    let volume = volumes
        .iter()
        .find(|v| v["name"] == fetch_volume.as_str())
        .unwrap();
    assert!(
        volume["emptyDir"].is_mapping(),
        "the model volume must be an emptyDir"
    );
}

/// Seconds left after drain and grace for the process to finish exiting (logs flushed, the
/// worker's last call returning) before the kubelet's SIGKILL.
const EXIT_MARGIN_SECONDS: i64 = 5;

/// The kubelet kills the container terminationGracePeriodSeconds after the preStop hook starts;
/// pinserve needs --drain-seconds plus one --shutdown-grace-seconds after SIGTERM: in-flight
/// requests and the model worker share that one grace period (a stuck request is dropped when it
/// ends), plus a margin to exit.
fn check_termination_grace(rollout: &Value) {
    let serve = container(rollout, "containers", SERVE);
    let seconds = |name, default| flag(serve, name).map_or(default, |v| v.parse().unwrap());
    let drain = seconds("--drain-seconds", DEFAULT_DRAIN_SECONDS);
    let grace = seconds("--shutdown-grace-seconds", DEFAULT_SHUTDOWN_GRACE_SECONDS);
    let pre_stop = &serve["lifecycle"]["preStop"];
    let pre_stop_seconds = if pre_stop.is_null() {
        0
    } else {
        int(&pre_stop["sleep"]["seconds"], "preStop sleep seconds")
    };
    let period = int(
        &rollout["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        period >= pre_stop_seconds + drain + grace + EXIT_MARGIN_SECONDS,
        "terminationGracePeriodSeconds {period} < preStop {pre_stop_seconds} + drain {drain} + \
         shutdown grace {grace} + exit margin {EXIT_MARGIN_SECONDS}"
    );
}

/// Kubernetes memory quantities as the manifests write them (`512Mi`, `2Gi`), in bytes.
fn memory_bytes(quantity: &str) -> u64 {
    let (number, shift) = [("Ki", 10), ("Mi", 20), ("Gi", 30)]
        .iter()
        .find_map(|(suffix, shift)| quantity.strip_suffix(suffix).map(|n| (n, *shift)))
        .unwrap_or((quantity, 0));
    number.parse::<u64>().expect("a whole memory quantity") << shift
}

/// The request bodies pinserve may hold at once (`--max-inflight-body-bytes`, by default twice
/// `--max-body-bytes`), times what decoding and inference make of each byte, fit in half the
/// container's memory limit: the other half is the model's and the runtime's.
fn check_request_memory(rollout: &Value) {
    let serve = container(rollout, "containers", SERVE);
    let bytes = |name| flag(serve, name).map(|v| v.parse::<u64>().unwrap());
    let body = bytes("--max-body-bytes").unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let inflight = bytes("--max-inflight-body-bytes").unwrap_or(2 * body);
    let limit = memory_bytes(
        serve["resources"]["limits"]["memory"]
            .as_str()
            .expect("a memory limit"),
    );
    assert!(
        REQUEST_MEMORY_PER_BODY_BYTE * inflight <= limit / 2,
        "{} MiB of request bodies at once (--max-inflight-body-bytes) take up to {} MiB, more \
         than half the memory limit of {} MiB",
        inflight >> 20,
        (REQUEST_MEMORY_PER_BODY_BYTE * inflight) >> 20,
        limit >> 20
    );
}

#[test]
fn every_environment_keeps_the_pod_policies() {
    for (service, env) in service_folders() {
        let docs = render(&service_env(&service, &env));
        let rollout = one_of_kind(&docs, "Rollout");
        assert!(
            of_kind(&docs, "Deployment").is_empty(),
            "{service}/{env}: a Deployment instead of a Rollout"
        );
        let context = format!("{service}/{env}");
        let check = |name: &str, f: &dyn Fn()| {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{context}: {name}: {message}");
            }
        };
        check("probes", &|| check_probes(rollout));
        check("security", &|| check_security(rollout));
        check("resources", &|| check_resources(rollout));
        check("image", &|| check_image(rollout));
        check("model source", &|| check_model_source(rollout, &service));
        check("termination grace", &|| check_termination_grace(rollout));
        check("request memory", &|| check_request_memory(rollout));
    }
}

/// Environments differ where they should: namespace, replicas and resources.
#[test]
fn overlays_set_namespace_replicas_and_resources() {
    let mut seen = BTreeSet::new();
    for env in ENVIRONMENTS {
        let docs = render(&format!("overlays/{env}"));
        for doc in &docs {
            assert_eq!(
                doc["metadata"]["namespace"],
                format!("models-{env}").as_str(),
                "{}",
                describe(doc)
            );
        }
        let rollout = one_of_kind(&docs, "Rollout");
        let serve = container(rollout, "containers", SERVE);
        seen.insert((
            int(&rollout["spec"]["replicas"], "replicas"),
            serde_yaml_ng::to_string(&serve["resources"]).unwrap(),
        ));
    }
    assert_eq!(seen.len(), 2, "staging and production are identical");
}

/// The base pins no digest: an empty MODEL_SHA256, which `pinserve fetch` reads as not pinned;
/// pinning one is the service overlays' part (checked with the model source above).
#[test]
fn base_leaves_the_digest_to_the_overlays() {
    let docs = render("base");
    let fetch = container(one_of_kind(&docs, "Rollout"), "initContainers", FETCH);
    assert_eq!(env_value(fetch, "MODEL_SHA256"), Some(""));
}

/// Patches of the Rollout are JSON 6902 with a `test` before any change: kustomize does not know
/// the Rollout's merge keys, and a guard makes a reordered base fail instead of patching the
/// wrong container.
#[test]
fn rollout_patches_are_guarded_json6902() {
    for dir in k8s::kustomizations() {
        let kustomization = read_documents(&dir.join("kustomization.yaml")).remove(0);
        assert!(
            kustomization["patchesStrategicMerge"].is_null()
                && kustomization["patchesJson6902"].is_null(),
            "{}: use `patches` with JSON 6902 operations",
            dir.display()
        );
        for patch in kustomization["patches"].as_sequence().into_iter().flatten() {
            let text = patch["patch"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: patches must be inline", dir.display()));
            let ops = parse_documents(text).remove(0);
            let ops = ops
                .as_sequence()
                .unwrap_or_else(|| panic!("{}: not a JSON 6902 patch", dir.display()));
            assert_eq!(
                ops.first().map(|op| &op["op"]),
                Some(&Value::from("test")),
                "{}: the first operation must be a test",
                dir.display()
            );
        }
    }
}

/// The services' guard bites: their patch applied to a pod whose first init container is not
/// fetch-model fails the build instead of pinning the wrong container's environment.
#[test]
fn model_pin_patch_refuses_an_unexpected_container_order() {
    let service =
        read_documents(&k8s_dir().join("services/fraud-detection/staging/kustomization.yaml"))
            .remove(0);
    let pin = service["patches"][0].clone();
    // Kustomize refuses absolute paths, so the kustomization lives inside the repository, in a
    // folder no other test walks.
    let scratch = k8s::repo().join("target");
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = tempfile::tempdir_in(scratch).unwrap();
    let reorder = serde_yaml_ng::to_value(serde_json::json!({
        "target": {"kind": "Rollout", "name": "pinserve"},
        "patch": "- op: add\n  path: /spec/template/spec/initContainers/0\n  value: {name: other, image: busybox:1.37}\n",
    }))
    .unwrap();
    let kustomization = serde_yaml_ng::to_value(serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../k8s/base"],
        "patches": [reorder, pin],
    }))
    .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        serde_yaml_ng::to_string(&kustomization).unwrap(),
    )
    .unwrap();
    let err = try_render(dir.path()).expect_err("the guarded patch applied to the wrong container");
    assert!(
        err.contains("testing value /spec/template/spec/initContainers/0/name failed"),
        "failed for another reason: {err}"
    );
}

/// Prefixes and generated names still connect: the Rollout's analysis, canary Service and
/// registry ConfigMap exist under the names it uses, and the selectors of one service's Service,
/// PodMonitor and PodDisruptionBudget pick its own pods and no other service's.
#[test]
fn names_and_selectors_connect_within_each_service() {
    for env in ENVIRONMENTS {
        let mut pods = BTreeMap::new();
        let mut selectors = Vec::new();
        for service in SERVICES {
            let docs = render(&service_env(service, env));
            let rollout = one_of_kind(&docs, "Rollout");
            let name = rollout["metadata"]["name"].as_str().unwrap();
            assert!(name.starts_with(service), "{name} is not prefixed");
            let canary = &rollout["spec"]["strategy"]["canary"];
            let canary_service = canary["canaryService"].as_str().unwrap();
            assert!(
                named(&docs, "Service", canary_service).is_some(),
                "{canary_service}"
            );
            for step in canary["steps"].as_sequence().unwrap() {
                for template in step["analysis"]["templates"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                {
                    let template = template["templateName"].as_str().unwrap();
                    assert!(
                        named(&docs, "AnalysisTemplate", template).is_some(),
                        "{service}/{env}: the Rollout names AnalysisTemplate {template}, which the render lacks"
                    );
                }
            }
            let fetch = container(rollout, "initContainers", FETCH);
            for source in fetch["envFrom"].as_sequence().into_iter().flatten() {
                if let Some(config_map) = source["configMapRef"]["name"].as_str() {
                    assert!(
                        named(&docs, "ConfigMap", config_map).is_some(),
                        "{config_map}"
                    );
                }
            }
            let own_pods = pod_labels(rollout);
            assert!(
                selects(
                    &labels(&rollout["spec"]["selector"]["matchLabels"]),
                    &own_pods
                ),
                "{name}: its selector misses its own pods"
            );
            for doc in &docs {
                let selector = match doc["kind"].as_str().unwrap() {
                    "Service" => labels(&doc["spec"]["selector"]),
                    "PodMonitor" | "PodDisruptionBudget" => {
                        labels(&doc["spec"]["selector"]["matchLabels"])
                    }
                    _ => continue,
                };
                assert!(
                    selects(&selector, &own_pods),
                    "{} misses its pods",
                    describe(doc)
                );
                selectors.push((service, describe(doc), selector));
            }
            pods.insert(service, own_pods);
        }
        for (owner, what, selector) in &selectors {
            for (service, labels) in &pods {
                if service != owner {
                    assert!(
                        !selects(selector, labels),
                        "{what} also selects {service}'s pods"
                    );
                }
            }
        }
    }
}

/// The canary: 10% with a pause, the analysis on the canary's own pod-template hash, then 50%,
/// and nothing is promoted without passing an analysis.
#[test]
fn canary_steps_gate_on_the_analysis() {
    for (service, env) in service_folders() {
        let docs = render(&service_env(&service, &env));
        let rollout = one_of_kind(&docs, "Rollout");
        let steps = rollout["spec"]["strategy"]["canary"]["steps"]
            .as_sequence()
            .expect("no canary steps");
        let weights: Vec<i64> = steps
            .iter()
            .filter_map(|step| step["setWeight"].as_i64())
            .collect();
        assert_eq!(weights, [10, 50], "{service}/{env}");
        let position = |pred: &dyn Fn(&Value) -> bool| steps.iter().position(pred);
        let first_weight = position(&|s| s["setWeight"] == 10).unwrap();
        let first_analysis = position(&|s| !s["analysis"].is_null()).expect("no analysis step");
        let half = position(&|s| s["setWeight"] == 50).unwrap();
        assert!(
            !steps[first_weight + 1]["pause"]["duration"].is_null(),
            "pause after 10%"
        );
        assert!(first_weight < first_analysis && first_analysis < half);
        let template = one_of_kind(&docs, "AnalysisTemplate");
        let arg_names: BTreeSet<&str> = template["spec"]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|arg| arg["name"].as_str().unwrap())
            .collect();
        for step in steps.iter().filter(|s| !s["analysis"].is_null()) {
            let analysis = &step["analysis"];
            assert_eq!(
                analysis["templates"][0]["templateName"],
                template["metadata"]["name"]
            );
            // The comparisons need the stable version's hash beside the canary's.
            for (name, which) in [("canary-hash", "Latest"), ("stable-hash", "Stable")] {
                let hash = analysis["args"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|arg| arg["name"] == name)
                    .unwrap_or_else(|| panic!("no {name} argument"));
                assert_eq!(hash["valueFrom"]["podTemplateHashValue"], which);
            }
            for arg in analysis["args"].as_sequence().unwrap() {
                assert!(arg_names.contains(arg["name"].as_str().unwrap()));
            }
        }
        assert!(
            !steps.last().unwrap()["analysis"].is_null(),
            "{service}/{env}: the last step before full promotion must be an analysis"
        );
    }
}

/// The analysis selects the canary by `rollouts_pod_template_hash` and the drift alerts name the
/// service by `service`: the PodMonitor must copy both pod labels onto every series, from
/// pinserve's metrics endpoint.
#[test]
fn pod_monitor_keeps_the_pod_template_hash() {
    for (service, env) in service_folders() {
        let docs = render(&service_env(&service, &env));
        let monitor = one_of_kind(&docs, "PodMonitor");
        let endpoints = monitor["spec"]["podMetricsEndpoints"]
            .as_sequence()
            .unwrap();
        assert_eq!(endpoints.len(), 1);
        let endpoint = &endpoints[0];
        assert_eq!(endpoint["port"], "http");
        assert_eq!(endpoint["path"], "/metrics");
        let relabelings = endpoint["relabelings"].as_sequence().unwrap();
        let copies = |source: &str, target: &str| {
            relabelings.iter().any(|r| {
                r["sourceLabels"].as_sequence().map(Vec::as_slice)
                    == Some(&[Value::from(source)][..])
                    && r["targetLabel"] == target
                    && (r["action"].is_null() || r["action"] == "replace")
            })
        };
        assert!(copies(
            "__meta_kubernetes_pod_label_rollouts_pod_template_hash",
            "rollouts_pod_template_hash"
        ));
        assert!(copies("__meta_kubernetes_namespace", "namespace"));
        assert!(copies("__meta_kubernetes_pod_name", "pod"));
        assert!(copies(
            "__meta_kubernetes_pod_label_app_kubernetes_io_instance",
            "service"
        ));
    }
}

fn automated(app: &Value) -> &Value {
    &app["spec"]["syncPolicy"]["automated"]
}

fn has_resources_finalizer(app: &Value) -> bool {
    app["metadata"]["finalizers"]
        .as_sequence()
        .is_some_and(|f| f.iter().any(|f| f == RESOURCES_FINALIZER))
}

/// Staging syncs, prunes and heals by itself; production is synced by a person and carries no
/// resources finalizer, so deleting its Application never deletes the service.
fn check_sync_policy(app: &Value, env: &str) {
    let name = describe(app);
    match env {
        "staging" => {
            assert_eq!(automated(app)["prune"], true, "{name}");
            assert_eq!(automated(app)["selfHeal"], true, "{name}");
        }
        "production" => {
            assert!(automated(app).is_null(), "{name} syncs automatically");
            assert!(
                !has_resources_finalizer(app),
                "{name} has the resources finalizer"
            );
        }
        other => panic!("unknown environment {other}"),
    }
}

/// One child Application per service folder and environment, each pointing at its folder and the
/// namespace that folder renders into.
#[test]
fn app_of_apps_children_match_the_service_folders() {
    let root = named(&render("argocd"), "Application", "pinserve-apps")
        .expect("no root Application")
        .clone();
    assert_eq!(root["spec"]["source"]["path"], "k8s/argocd/apps");
    let mut children = BTreeMap::new();
    for file in std::fs::read_dir(k8s_dir().join("argocd/apps")).unwrap() {
        for app in read_documents(&file.unwrap().path()) {
            assert_eq!(app["kind"], "Application");
            assert_eq!(
                app["spec"]["source"]["repoURL"],
                root["spec"]["source"]["repoURL"]
            );
            let path = app["spec"]["source"]["path"].as_str().unwrap().to_owned();
            children.insert(path, app);
        }
    }
    for (service, env) in service_folders() {
        let path = format!("k8s/{}", service_env(&service, &env));
        let app = children
            .get(&path)
            .unwrap_or_else(|| panic!("no Application for {path}"));
        assert_eq!(app["metadata"]["name"], format!("{service}-{env}").as_str());
        assert_eq!(app["spec"]["project"], "pinserve");
        check_sync_policy(app, &env);
        let docs = render(&service_env(&service, &env));
        for doc in &docs {
            assert_eq!(
                doc["metadata"]["namespace"],
                app["spec"]["destination"]["namespace"],
                "{}",
                describe(doc)
            );
        }
    }
    for path in children.keys() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        assert!(
            folder.join("kustomization.yaml").is_file(),
            "{path} is not a kustomization"
        );
    }
}

/// The ApplicationSet generates, for each service folder, the Application the app-of-apps child
/// declares: its template with the generator's parameters filled in and the staging patch
/// applied, strictly valid, and synced as the environment requires.
#[test]
fn application_set_generates_the_same_applications() {
    let appset = one_of_kind(&render("argocd/applicationset"), "ApplicationSet").clone();
    let spec = &appset["spec"];
    assert_eq!(spec["goTemplate"], true);
    assert_eq!(
        spec["generators"][0]["git"]["directories"][0]["path"],
        "k8s/services/*/*"
    );
    assert_eq!(spec["syncPolicy"]["preserveResourcesOnDeletion"], true);
    assert_eq!(spec["syncPolicy"]["applicationsSync"], "create-update");
    let patch = spec["templatePatch"].as_str().expect("no templatePatch");
    let lines: Vec<&str> = patch.lines().collect();
    assert_eq!(
        lines.first().map(|l| l.trim()),
        Some(r#"{{- if eq .path.basename "staging" }}"#)
    );
    assert_eq!(lines.last().map(|l| l.trim()), Some("{{- end }}"));
    let staging_patch = parse_documents(&lines[1..lines.len() - 1].join("\n")).remove(0);
    let template = serde_yaml_ng::to_string(&spec["template"]).unwrap();
    let mut generated = Vec::new();
    for (service, env) in service_folders() {
        let path = format!("k8s/{}", service_env(&service, &env));
        let filled = template
            .replace("{{ index .path.segments 2 }}", &service)
            .replace("{{ .path.basename }}", &env)
            .replace("{{ .path.path }}", &path);
        assert!(!filled.contains("{{"), "unfilled parameters:\n{filled}");
        let mut app: Value = serde_yaml_ng::from_str(&filled).unwrap();
        if env == "staging" {
            merge(&mut app, &staging_patch);
        }
        let mut app = serde_yaml_ng::to_value(serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": serde_json::to_value(&app["metadata"]).unwrap(),
            "spec": serde_json::to_value(&app["spec"]).unwrap(),
        }))
        .unwrap();
        app["metadata"]["namespace"] = appset["metadata"]["namespace"].clone();
        check_sync_policy(&app, &env);
        let child =
            read_documents(&k8s_dir().join(format!("argocd/apps/{service}-{env}.yaml"))).remove(0);
        assert_eq!(app["metadata"]["name"], child["metadata"]["name"]);
        assert_eq!(app["spec"]["source"], child["spec"]["source"]);
        assert_eq!(app["spec"]["destination"], child["spec"]["destination"]);
        generated.push(app);
    }
    validate(&generated).unwrap_or_else(|err| panic!("{err}"));
}

/// A strategic merge of maps, as templatePatch applies to maps.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_mapping_mut(), patch.as_mapping()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if existing.is_mapping() => merge(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The AppProject lets the services' Applications deploy exactly what the services render, into
/// the namespaces they render into, and the root project only Applications.
#[test]
fn app_project_allows_what_the_services_deploy() {
    let docs = render("argocd");
    let project = named(&docs, "AppProject", "pinserve").expect("no AppProject pinserve");
    let allowed: BTreeSet<(String, String)> = project["spec"]["namespaceResourceWhitelist"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let destinations: BTreeSet<&str> = project["spec"]["destinations"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["namespace"].as_str().unwrap())
        .collect();
    let mut folders: Vec<String> = service_folders()
        .iter()
        .map(|(service, env)| service_env(service, env))
        .collect();
    folders.push("monitoring".to_owned());
    for folder in folders {
        for doc in render(&folder) {
            let api_version = doc["apiVersion"].as_str().unwrap();
            let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
            let kind = doc["kind"].as_str().unwrap().to_owned();
            assert!(
                allowed.contains(&(group.to_owned(), kind)),
                "{folder}: the project does not allow {}",
                describe(&doc)
            );
            let namespace = doc["metadata"]["namespace"].as_str().unwrap();
            assert!(
                destinations.contains(namespace),
                "{folder}: namespace {namespace}"
            );
        }
    }
    let bootstrap = named(&docs, "AppProject", "pinserve-bootstrap").unwrap();
    assert_eq!(
        bootstrap["spec"]["namespaceResourceWhitelist"],
        serde_yaml_ng::to_value(
            serde_json::json!([{"group": "argoproj.io", "kind": "Application"}])
        )
        .unwrap()
    );
    let root = named(&docs, "Application", "pinserve-apps").unwrap();
    assert_eq!(root["spec"]["project"], "pinserve-bootstrap");
    assert!(
        !has_resources_finalizer(root),
        "deleting the root must not cascade"
    );
}

/// Argo CD has no health for Applications since 1.8; the root's health needs the documented Lua
/// customisation, which reports each child's own health.
#[test]
fn argocd_cm_restores_application_health() {
    let docs = render("argocd");
    let cm = named(&docs, "ConfigMap", "argocd-cm").expect("no argocd-cm");
    assert_eq!(cm["metadata"]["namespace"], "argocd");
    let lua = cm["data"]["resource.customizations.health.argoproj.io_Application"]
        .as_str()
        .expect("no health customisation for argoproj.io/Application");
    for line in [
        "hs.status = \"Progressing\"",
        "hs.status = obj.status.health.status",
        "hs.message = obj.status.health.message",
        "return hs",
    ] {
        assert!(lua.contains(line), "the health check lacks {line}");
    }
}

/// The Rollout of every service environment with `component` added, each passing strict
/// validation and every pod policy, named `service/env`.
fn rollouts_with_component(component: &str) -> Vec<(String, Value)> {
    let mut rollouts = Vec::new();
    for (service, env) in service_folders() {
        // Kustomize refuses absolute paths, so the including kustomization lives in the repo.
        let dir = tempfile::tempdir_in(k8s::repo().join("target")).unwrap();
        let kustomization = format!(
            "resources:\n  - ../../k8s/services/{service}/{env}\ncomponents:\n  - ../../k8s/components/{component}\n"
        );
        std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
        let docs =
            k8s::try_render(dir.path()).unwrap_or_else(|err| panic!("{service}/{env}: {err}"));
        validate(&docs).unwrap_or_else(|err| panic!("{service}/{env}: {err}"));
        let rollout = one_of_kind(&docs, "Rollout");
        check_security(rollout);
        rollouts.push((format!("{service}/{env}"), rollout.clone()));
    }
    rollouts
}

/// The ConfigMap behind the pod's volume `volume`, which `container` mounts read-only at
/// `path`.
fn config_map_mounted_read_only(
    rollout: &Value,
    container: &Value,
    volume: &str,
    path: &str,
) -> String {
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == volume)
        .unwrap_or_else(|| panic!("{volume} is not mounted"));
    assert_eq!(mount["mountPath"], path);
    assert_eq!(mount["readOnly"], true, "{volume}");
    let volume = rollout["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|candidate| candidate["name"] == volume)
        .unwrap_or_else(|| panic!("no {volume} volume"));
    volume["configMap"]["name"].as_str().unwrap().to_owned()
}

/// `k8s/components/signed-models` added to every service environment: both containers verify
/// the model with the public key of the ConfigMap, mounted read-only.
#[test]
fn signed_models_component_verifies_with_a_read_only_key_from_a_config_map() {
    const MOUNT: &str = "/etc/pinserve/signing";
    for (shown, rollout) in rollouts_with_component("signed-models") {
        for (list, name) in [("initContainers", FETCH), ("containers", SERVE)] {
            let container = container(&rollout, list, name);
            let key = env_value(container, "PINSERVE_SIGNATURE_PUBLIC_KEY")
                .unwrap_or_else(|| panic!("{shown} {name}: no public key"));
            assert_eq!(key, format!("{MOUNT}/signing-key.pub"));
            let config_map =
                config_map_mounted_read_only(&rollout, container, "model-signing", MOUNT);
            assert_eq!(config_map, "pinserve-model-signing", "{shown} {name}");
        }
    }
}

/// `k8s/components/keyless-signed-models`: both containers verify keyless signatures against
/// the trust root of the ConfigMap, mounted read-only, and take the signer's identity and OIDC
/// issuer from the same ConfigMap.
#[test]
fn keyless_signed_models_component_reads_trust_root_and_signer_from_a_config_map() {
    const MOUNT: &str = "/etc/pinserve/sigstore";
    for (shown, rollout) in rollouts_with_component("keyless-signed-models") {
        for (list, name) in [("initContainers", FETCH), ("containers", SERVE)] {
            let container = container(&rollout, list, name);
            let root = env_value(container, "PINSERVE_SIGSTORE_TRUST_ROOT")
                .unwrap_or_else(|| panic!("{shown} {name}: no trust root"));
            assert_eq!(root, format!("{MOUNT}/trusted_root.json"));
            let config_map =
                config_map_mounted_read_only(&rollout, container, "sigstore-trust-root", MOUNT);
            assert_eq!(config_map, "pinserve-sigstore", "{shown} {name}");
            for (variable, key) in [
                ("PINSERVE_SIGNATURE_IDENTITY", "identity"),
                ("PINSERVE_SIGNATURE_OIDC_ISSUER", "oidc-issuer"),
            ] {
                let reference = env_entry(container, variable)
                    .map(|var| &var["valueFrom"]["configMapKeyRef"])
                    .unwrap_or_else(|| panic!("{shown} {name}: no {variable}"));
                assert_eq!(reference["name"], "pinserve-sigstore", "{shown} {name}");
                assert_eq!(reference["key"], key, "{shown} {name}");
            }
        }
    }
}
