"""The retraining loop on one machine (scripts/loop-demo.sh runs this; see k8s/README.md).

Real parts: an MLflow tracking server, Alertmanager, Prometheus, git (a bare repository holding a
copy of k8s/ stands for the manifest repository), pinserve itself and the example trainer. The
one fake is the forge's pull-request API (GitHub's two calls), which cannot run here.

The pipeline's steps are not written here: they are read from k8s/pipelines/workflowtemplate.yaml
and run as local processes in the order, with the arguments, environment and `when` conditions
the WorkflowTemplate gives them, with the service's parameters from its CronWorkflow. Each
container path under /work is a folder of the run's own, each git input artifact a clone of the
bare repository, and a Secret's key a demo value. The Sensor's filter is evaluated from
k8s/pipelines/sensor.yaml on the notification Alertmanager delivered.

Exits 0 when every step happened as described, 1 otherwise; prints a summary either way.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "churn-prediction"
ENVIRONMENT = "staging"
FORGE_REPO = "example-org/ml-manifests"
# The demo's stand-ins for the Secrets the WorkflowTemplate names.
SECRETS = {
    ("pinserve-manifests-git", "username"): "demo",
    ("pinserve-manifests-git", "password"): "demo-password",
    ("pinserve-forge-token", "token"): "demo-token",
}
# Alerts need minutes of evidence in a cluster; the demo waits seconds (the only changes made to
# the rules and the route, printed when they are made).
DEMO_FOR = "5s"
DEMO_GROUP_WAIT = "1s"


def say(text: str) -> None:
    print(text, flush=True)


class Failure(Exception):
    """A step that did not happen as described."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Failure(what)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(method: str, url: str, body: object = None, timeout: float = 30) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
            if response.headers.get_content_type() != "application/json":
                return response.status, text.decode(errors="replace")
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def wait_until(what: str, check, timeout: float = 120.0, every: float = 0.5):
    """Polls `check` until it returns something truthy; a Failure naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except OSError as err:
            last = err
        time.sleep(every)
    raise Failure(f"{what}: not within {timeout:.0f} s ({last})")


class Processes:
    """Background services, each logging to a file, all stopped at exit."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen]] = []
        atexit.register(self.stop)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        self.running.append((name, process))
        return process

    def stop(self) -> None:
        for _, process in reversed(self.running):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.running.clear()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


class Recorder(ThreadingHTTPServer):
    """A loopback HTTP server keeping the JSON bodies posted to it."""

    def __init__(self, handler):
        super().__init__(("127.0.0.1", 0), handler)
        self.received: list[tuple[str, object]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ForgeHandler(BaseHTTPRequestHandler):
    """GitHub's pull-request calls as `pinserve promote` makes them: list open, then create."""

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.reply(200, [])

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = urllib.parse.urlsplit(self.path).path
        self.server.received.append((path, {**body, "authorization": self.headers["Authorization"]}))
        self.reply(201, {"html_url": f"https://forge.example/{FORGE_REPO}/pull/1", "number": 1})


class WebhookHandler(BaseHTTPRequestHandler):
    """Where Alertmanager delivers notifications, as it would to the EventSource's webhook."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


# ------------------------------------------------------------------------------------------------
# The Sensor's filter expressions (Argo Events evaluates them with govaluate): names bound to the
# fields' values, double-quoted strings, ==, !=, &&, || and parentheses.
# ------------------------------------------------------------------------------------------------

TOKEN = re.compile(r'\s*(?:(&&|\|\||==|!=|\(|\))|"([^"]*)"|([A-Za-z_][A-Za-z0-9_]*))')


def evaluate_filter(expression: str, names: dict[str, object]) -> bool:
    tokens, position = [], 0
    while position < len(expression.rstrip()):
        match = TOKEN.match(expression, position)
        if not match:
            raise Failure(f"the Sensor's expression {expression!r} has syntax the demo does not know")
        operator, text, name = match.groups()
        tokens.append(("op", operator) if operator else ("text", text) if text is not None else ("name", name))
        position = match.end()

    def value(at: int) -> tuple[object, int]:
        kind, item = tokens[at]
        if kind == "op" and item == "(":
            result, at = disjunction(at + 1)
            return result, at + 1
        if kind == "text":
            return item, at + 1
        if kind == "name":
            if item not in names:
                raise Failure(f"the Sensor's expression names {item!r}, which has no field")
            return names[item], at + 1
        raise Failure(f"unexpected {item!r} in {expression!r}")

    def comparison(at: int) -> tuple[object, int]:
        left, at = value(at)
        if at < len(tokens) and tokens[at] in (("op", "=="), ("op", "!=")):
            operator = tokens[at][1]
            right, at = value(at + 1)
            return (left == right) if operator == "==" else (left != right), at
        return left, at

    def conjunction(at: int) -> tuple[object, int]:
        left, at = comparison(at)
        while at < len(tokens) and tokens[at] == ("op", "&&"):
            right, at = comparison(at + 1)
            left = bool(left) and bool(right)
        return left, at

    def disjunction(at: int) -> tuple[object, int]:
        left, at = conjunction(at)
        while at < len(tokens) and tokens[at] == ("op", "||"):
            right, at = conjunction(at + 1)
            left = bool(left) or bool(right)
        return left, at

    result, end = disjunction(0)
    if end != len(tokens):
        raise Failure(f"trailing tokens in {expression!r}")
    return bool(result)


def lookup(event: dict, path: str):
    value = event
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def sensor_selects(sensor: dict, event: dict) -> bool:
    """The Sensor's dependency filter on `event`, as Argo Events applies it: every expr (the
    operator is `and`), a field whose path is missing failing its expr."""
    filters = sensor["spec"]["dependencies"][0]["filters"]
    expect(filters.get("exprLogicalOperator") == "and", "the Sensor's exprs are no longer and-ed")
    for item in filters["exprs"]:
        names = {field["name"]: lookup(event, field["path"]) for field in item["fields"]}
        if any(value is None for value in names.values()):
            return False
        if not evaluate_filter(item["expr"], names):
            return False
    return True


# ------------------------------------------------------------------------------------------------
# The WorkflowTemplate, run as local processes
# ------------------------------------------------------------------------------------------------


class Workflow:
    """One run of the WorkflowTemplate for the service, in `work`."""

    def __init__(self, demo: "Demo", name: str, train_args: list[str]):
        self.demo = demo
        self.name = name
        self.work = demo.work / name
        self.work.mkdir()
        self.train_args = train_args
        self.results: dict[str, dict] = {}
        spec = demo.template["spec"]
        self.parameters = {p["name"]: str(p.get("value", "")) for p in spec["arguments"]["parameters"]}
        for parameter in demo.cron["spec"]["workflowSpec"]["arguments"]["parameters"]:
            self.parameters[parameter["name"]] = str(parameter["value"])
        self.parameters.update(demo.overrides)
        self.templates = {t["name"]: t for t in spec["templates"]}
        self.entrypoint = self.templates[spec["entrypoint"]]

    def substitute(self, text: str, inputs: dict[str, str], paths: dict[str, Path]) -> str:
        def replace(match: re.Match) -> str:
            key = match.group(1).strip()
            if key == "workflow.name":
                return self.name
            if key.startswith("workflow.parameters."):
                return self.parameters[key.removeprefix("workflow.parameters.")]
            if key.startswith("inputs.parameters."):
                return inputs[key.removeprefix("inputs.parameters.")]
            if key.startswith("steps."):
                step, _, field = key.removeprefix("steps.").partition(".")
                return str(self.results[step][field])
            raise Failure(f"the WorkflowTemplate uses {{{{{key}}}}}, which the demo does not know")

        text = re.sub(r"\{\{([^}]*)\}\}", replace, text)
        for container_path in sorted(paths, key=len, reverse=True):
            text = text.replace(container_path, str(paths[container_path]))
        return text

    def run(self) -> str:
        """Runs the entrypoint's steps; the workflow's phase."""
        say(f"  workflow {self.name} (WorkflowTemplate {self.demo.template['metadata']['name']}, "
            f"parameters of CronWorkflow {self.demo.cron['metadata']['name']})")
        for group in self.entrypoint["steps"]:
            for step in group:
                when = step.get("when")
                if when and not self.condition(self.substitute(when, {}, {})):
                    say(f"    - {step['name']}: skipped ({when})")
                    continue
                inputs = {
                    p["name"]: self.substitute(str(p["value"]), {}, {})
                    for p in step.get("arguments", {}).get("parameters", [])
                }
                code, output = self.run_template(step["template"], inputs)
                self.results[step["name"]] = {"exitCode": code, "outputs.result": output.strip()}
                if code != 0 and not step.get("continueOn", {}).get("failed"):
                    say(f"    workflow {self.name}: Failed at {step['name']}")
                    return "Failed"
        say(f"    workflow {self.name}: Succeeded")
        return "Succeeded"

    @staticmethod
    def condition(text: str) -> bool:
        match = re.fullmatch(r"\s*(\S+)\s*(==|!=)\s*(\S+)\s*", text)
        if not match:
            raise Failure(f"the demo cannot evaluate the condition {text!r}")
        left, operator, right = match.groups()
        return (left == right) if operator == "==" else (left != right)

    def paths(self, template: dict) -> dict[str, Path]:
        """Where each /work folder of this step lives: the trained model's folder is the same for
        the train step's output and the later steps' input, and git artifacts are clones."""
        shared = {
            "/work/out": self.work / "trained",
            "/work/trained": self.work / "trained",
            "/work/profile": self.work / "profile",
            "/work/report": self.work / "report",
        }
        mapping = dict(shared)
        for artifact in template.get("inputs", {}).get("artifacts", []):
            if "git" in artifact:
                clone = self.work / f"{template['name']}-{Path(artifact['path']).name}"
                mapping[artifact["path"]] = clone
        mapping["/work"] = self.work / f"{template['name']}-home"
        return mapping

    def run_template(self, name: str, inputs: dict[str, str]) -> tuple[int, str]:
        template = self.templates[name]
        paths = self.paths(template)
        for folder in paths.values():
            if folder.name != "trained" or name == "train":
                folder.mkdir(parents=True, exist_ok=True)
        for artifact in template.get("inputs", {}).get("artifacts", []):
            git = artifact.get("git")
            if git:
                clone = paths[artifact["path"]]
                shutil.rmtree(clone)
                depth = ["--depth", str(git["depth"])] if git.get("depth") else []
                subprocess.run(
                    ["git", "clone", "-q", *depth, "--branch", self.substitute(git["revision"], inputs, {}),
                     self.substitute(git["repo"], inputs, {}), str(clone)],
                    check=True,
                )
        container = template.get("container") or template.get("script")
        env = {"PATH": os.environ["PATH"]}
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = self.substitute(str(variable["value"]), inputs, paths)
            else:
                key = variable["valueFrom"]["secretKeyRef"]
                env[variable["name"]] = SECRETS[(key["name"], key["key"])]
        args = [self.substitute(str(arg), inputs, paths) for arg in container.get("args", [])]
        image = self.substitute(container["image"], inputs, paths)
        if "script" in template:
            source = self.work / f"{name}.py"
            source.write_text(container["source"])
            argv = [*container["command"], str(source)]
        elif image == self.parameters["training-image"]:
            argv = [self.demo.trainer_python, str(ROOT / "examples/trainer/train.py"), *args, *self.train_args]
        elif image.startswith("ghcr.io/pinserve/pinserve:"):
            argv = [*(container.get("command") or [self.demo.pinserve]), *args]
        else:
            raise Failure(f"step {name} runs {image}, which the demo has no stand-in for")
        cwd = container.get("workingDir")
        cwd = self.substitute(cwd, inputs, paths) if cwd else str(self.work)
        shown = " ".join(
            a.replace(str(self.work), ".") if len(a) < 90 else a[:87] + "..." for a in argv[1:])
        process = subprocess.run(argv, env={**env, **self.demo.process_env}, cwd=cwd,
                                 capture_output=True, text=True)
        say(f"    - {name}: exit {process.returncode}  ({Path(argv[0]).name} {shown[:200]})")
        (self.work / f"{name}.log").write_text(process.stdout + process.stderr)
        if process.returncode not in (0, 3) or name == "alert":
            for line in (process.stderr.strip().splitlines() + process.stdout.strip().splitlines())[-4:]:
                say(f"        {line}")
        return process.returncode, process.stdout


# ------------------------------------------------------------------------------------------------
# The demo
# ------------------------------------------------------------------------------------------------


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.work = Path(tempfile.mkdtemp(prefix="pinserve-loop-"))
        self.keep = args.keep
        (self.work / "logs").mkdir()
        self.processes = Processes(self.work / "logs")
        self.pinserve = args.pinserve
        self.trainer_python = args.trainer_python
        self.mlflow = args.mlflow
        self.kubectl = args.kubectl
        self.checks: list[tuple[str, bool]] = []
        pipelines = ROOT / "k8s/pipelines"
        self.template = yaml.safe_load((pipelines / "workflowtemplate.yaml").read_text())
        crons = list(yaml.safe_load_all((pipelines / "cronworkflows.yaml").read_text()))
        self.crons = [c for c in crons if c]
        self.cron = next(c for c in self.crons if c["metadata"]["name"] == f"{SERVICE}-retrain")
        self.sensor = yaml.safe_load((pipelines / "sensor.yaml").read_text())
        self.forge = Recorder(ForgeHandler)
        self.webhook = Recorder(WebhookHandler)

    def check(self, what: str, condition: bool) -> None:
        self.checks.append((what, condition))
        say(f"  {'ok  ' if condition else 'FAIL'} {what}")
        expect(condition, what)

    def start_services(self) -> None:
        say("\n== services: MLflow, Alertmanager, the manifest repository, the forge stand-in")
        port = free_port()
        self.mlflow_url = f"http://127.0.0.1:{port}"
        self.processes.start("mlflow", [
            self.mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.work}/mlflow.db",
            "--artifacts-destination", str(self.work / "mlflow-artifacts"),
        ])
        config = yaml.safe_load((ROOT / "k8s/monitoring/alertmanager-pinserve.yaml").read_text())
        for route in config["route"]["routes"]:
            route["group_wait"] = DEMO_GROUP_WAIT
        for receiver in config["receivers"]:
            for webhook in receiver.get("webhook_configs", []):
                webhook["url"] = self.webhook.url + urllib.parse.urlsplit(webhook["url"]).path
        (self.work / "alertmanager.yml").write_text(yaml.safe_dump(config))
        say(f"  Alertmanager: k8s/monitoring/alertmanager-pinserve.yaml, the webhook at "
            f"{self.webhook.url}, group_wait {DEMO_GROUP_WAIT}")
        port = free_port()
        self.alertmanager_url = f"http://127.0.0.1:{port}"
        self.processes.start("alertmanager", [
            shutil.which("prometheus-alertmanager") or "alertmanager",
            f"--config.file={self.work / 'alertmanager.yml'}",
            f"--storage.path={self.work / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--cluster.listen-address=",
        ])
        # The manifest repository: a bare repository holding a copy of k8s/ on main.
        self.bare = self.work / "git" / FORGE_REPO.split("/")[0] / (FORGE_REPO.split("/")[1] + ".git")
        seed = self.work / "seed"
        shutil.copytree(ROOT / "k8s", seed / "k8s")
        git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.invalid"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
        subprocess.run([*git, "-C", str(seed), "add", "."], check=True)
        subprocess.run([*git, "-C", str(seed), "commit", "-q", "-m", "k8s/ as the cluster runs it"], check=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(self.bare)], check=True)
        self.overrides = {
            "manifest-repo": f"file://{self.bare}",
            "mlflow-tracking-uri": self.mlflow_url,
            "forge": "github",
            "forge-url": self.forge.url,
            "alertmanager-url": self.alertmanager_url,
            # The example trainer stands for the service's training image: its data and target.
            "dataset": "sklearn:breast_cancer",
            "target": "target",
        }
        say("  the CronWorkflow's parameters, but: " + ", ".join(f"{k}={v}" for k, v in self.overrides.items()))
        (self.work / "home").mkdir()
        self.process_env = {
            # Nothing the demo runs writes into the user's own caches.
            "HOME": str(self.work / "home"),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "ORT_DISABLE_TELEMETRY": "1",
            # As the image has it beside the binary (loop-demo.sh says where it is here).
            "ORT_DYLIB_PATH": os.environ.get("ORT_DYLIB_PATH", ""),
            "GIT_AUTHOR_NAME": "pinserve pipeline", "GIT_AUTHOR_EMAIL": "pipeline@example.invalid",
            "GIT_COMMITTER_NAME": "pinserve pipeline", "GIT_COMMITTER_EMAIL": "pipeline@example.invalid",
        }
        wait_until("MLflow to answer", lambda: http("GET", self.mlflow_url + "/health")[0] == 200)
        wait_until("Alertmanager to answer",
                   lambda: http("GET", self.alertmanager_url + "/-/ready")[0] == 200)
        say(f"  MLflow {self.mlflow_url}, Alertmanager {self.alertmanager_url}, "
            f"manifests file://{self.bare}, forge stand-in {self.forge.url}")

    def branches(self) -> set[str]:
        listed = subprocess.run(["git", "-C", str(self.bare), "branch", "--format=%(refname:short)"],
                                capture_output=True, text=True, check=True).stdout
        return set(listed.split())

    def model_version(self, version: str) -> dict:
        query = urllib.parse.urlencode({"name": SERVICE, "version": version})
        status, body = http("GET", f"{self.mlflow_url}/api/2.0/mlflow/model-versions/get?{query}")
        expect(status == 200, f"MLflow has no {SERVICE} version {version}: {body}")
        return body["model_version"]

    def step_1(self) -> None:
        say("\n== 1. version 1: trained (on 30 rows), registered, pinned in staging")
        run = Workflow(self, "retrain-1", ["--train-rows", "30"])
        # The first version has nothing to be compared with: the steps up to register, then a
        # person pins it (promote without --commit, committed on main).
        for name in ("train", "profile", "register"):
            code, output = run.run_template(name, {})
            expect(code == 0, f"step {name} of version 1 exited {code}")
            run.results[name] = {"exitCode": code, "outputs.result": output.strip()}
        version = run.results["register"]["outputs.result"]
        self.check(f"MLflow registered version 1 (register printed {version!r})", version == "1")
        checkout = self.work / "bootstrap"
        subprocess.run(["git", "clone", "-q", f"file://{self.bare}", str(checkout)], check=True)
        overlay = f"k8s/services/{SERVICE}/{ENVIRONMENT}"
        promote = subprocess.run(
            [self.pinserve, "promote", "--overlay", overlay, "--version", "1", "--model", SERVICE,
             "--sha256-from-registry"],
            cwd=checkout, env={**os.environ, **self.process_env}, capture_output=True, text=True)
        expect(promote.returncode == 0, f"pinning version 1 failed: {promote.stderr}")
        for command in (["add", "."], ["commit", "-q", "-m", f"{SERVICE} {ENVIRONMENT}: pin version 1"],
                        ["push", "-q", "origin", "main"]):
            subprocess.run(["git", "-c", "user.name=demo", "-c", "user.email=demo@example.invalid",
                            *command], cwd=checkout, check=True, env={**os.environ, **self.process_env})
        text = subprocess.run(["git", "-C", str(self.bare), "show", f"main:{overlay}/kustomization.yaml"],
                              capture_output=True, text=True, check=True).stdout
        self.check("main pins version 1 in staging", 'value: "1"' in text)

    def step_2(self) -> None:
        say("\n== 2. version 2 (all 426 training rows): evaluated against version 1, promoted")
        before = self.branches()
        run = Workflow(self, "retrain-2", [])
        phase = run.run()
        self.check("the workflow succeeded", phase == "Succeeded")
        self.check("evaluate passed the gate (exit 0)", run.results["evaluate"]["exitCode"] == 0)
        self.check("the alert step did not run", "alert" not in run.results)
        new = self.branches() - before
        self.check(f"one branch was pushed: {sorted(new)}", len(new) == 1)
        branch = new.pop()
        diff = subprocess.run(["git", "-C", str(self.bare), "diff", "main", branch],
                              capture_output=True, text=True, check=True).stdout
        changed = [line for line in diff.splitlines()
                   if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        digest = self.model_version("2")["tags"]
        digest = next(t["value"] for t in digest if t["key"] == "sha256")
        self.check(f"the branch changes only the version and the digest ({len(changed)} lines)",
                   len(changed) == 4 and any('"2"' in line for line in changed)
                   and any(digest in line for line in changed))
        report = (run.work / "report" / "report.md").read_text()
        pulls = [body for path, body in self.forge.received if path == f"/repos/{FORGE_REPO}/pulls"]
        self.check(f"one pull request was asked for: {[(p['head'], p['base']) for p in pulls]}",
                   len(pulls) == 1 and pulls[0]["head"] == branch and pulls[0]["base"] == "main")
        self.check(f"with the forge token ({pulls[0]['authorization']}) and the evaluation report as "
                   f"its body ({len(pulls[0]['body'])} characters)",
                   pulls[0]["authorization"] in ("Bearer demo-token", "token demo-token")
                   and pulls[0]["body"].strip() == report.strip())
        checkout = self.work / "promoted"
        subprocess.run(["git", "clone", "-q", "--branch", branch, f"file://{self.bare}", str(checkout)], check=True)
        rendered = subprocess.run([self.kubectl, "kustomize", str(checkout / f"k8s/services/{SERVICE}/{ENVIRONMENT}")],
                                  capture_output=True, text=True)
        self.check("the bumped overlay renders", rendered.returncode == 0)
        rollout = next(d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Rollout")
        fetch = rollout["spec"]["template"]["spec"]["initContainers"][0]
        env = {e["name"]: str(e.get("value", "")) for e in fetch["env"]}
        self.check(f"it pins version {env['MODEL_VERSION']} with digest {env['MODEL_SHA256'][:12]}...",
                   env["MODEL_VERSION"] == "2" and env["MODEL_SHA256"] == digest)
        # The init container's own arguments, its $(VARIABLES) filled from its env.
        models = self.work / "models"
        models.mkdir()
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in fetch["args"]]
        args = [f"--dest={models}" if a.startswith("--dest=") else a for a in args]
        fetched = subprocess.run([self.pinserve, *args],
                                 env={**os.environ, **self.process_env}, capture_output=True, text=True)
        self.check("pinserve fetch with the pinned digest verified version 2", fetched.returncode == 0)
        self.models = models
        port = free_port()
        self.serve_url = f"http://127.0.0.1:{port}"
        self.processes.start("serve", [self.pinserve, "serve", "--model-dir", str(models),
                                       "--listen", f"127.0.0.1:{port}"],
                             env=self.process_env)
        wait_until("serve to be ready", lambda: http("GET", self.serve_url + "/health")[0] == 200)
        row = (run.work / "trained" / "test.csv").read_text().splitlines()[1].split(",")[:-1]
        status, answer = http("POST", f"{self.serve_url}/v2/models/{SERVICE}/infer", {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [float(v) for v in row]}]})
        self.check(f"serve --model-dir answers as version {answer.get('model_version') if status == 200 else status}",
                   status == 200 and answer["model_version"] == "2")
        # The rows version 2 was trained on: what its reference profile describes.
        self.train_rows = [[float(v) for v in line.split(",")[:-1]]
                           for line in (run.work / "trained" / "train.csv").read_text().splitlines()[1:]]

    def step_3(self) -> None:
        say("\n== 3. version 3 (--degrade, shuffled labels): evaluated, rejected, reported")
        before = self.branches()
        pulls_before = len(self.forge.received)
        run = Workflow(self, "retrain-3", ["--degrade"])
        phase = run.run()
        self.check("the workflow ended failed", phase == "Failed")
        self.check("evaluate failed the gate (exit 3)", run.results["evaluate"]["exitCode"] == 3)
        self.check("promote did not run", "promote" not in run.results)
        self.check("no branch was pushed, no pull request asked for",
                   self.branches() == before and len(self.forge.received) == pulls_before)
        query = urllib.parse.quote('alertname="PinserveModelRejected"')
        alerts = wait_until("the rejection in Alertmanager", lambda: [
            a for a in http("GET", f"{self.alertmanager_url}/api/v2/alerts?filter={query}")[1]
            if a["labels"].get("version") == "3"])
        self.check(f"Alertmanager holds PinserveModelRejected for version 3: "
                   f"{alerts[0]['annotations']['description'][:90]}",
                   alerts[0]["labels"]["model"] == SERVICE and "roc_auc" in alerts[0]["annotations"]["description"])
        tags = {t["key"]: t["value"] for t in self.model_version("3").get("tags", [])}
        status, body = http("GET", f"{self.mlflow_url}/api/2.0/mlflow/runs/get?run_id={tags.get('pinserve.eval.run_id')}")
        metrics = {m["key"]: m["value"] for m in body["run"]["data"]["metrics"]} if status == 200 else {}
        self.check(f"MLflow tags version 3 failed, its run holds the metrics "
                   f"(roc_auc {metrics.get('roc_auc', float('nan')):.3f})",
                   tags.get("pinserve.eval.passed") == "false" and "roc_auc" in metrics)

    def step_4(self) -> None:
        say("\n== 4. drift: traffic with mean_radius five times larger; Prometheus, Alertmanager, the Sensor")
        rules = yaml.safe_load((ROOT / "k8s/monitoring/prometheusrule.yaml").read_text())["spec"]
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["for"] = DEMO_FOR
        (self.work / "rules.yml").write_text(yaml.safe_dump(rules))
        address = urllib.parse.urlsplit(self.serve_url).netloc
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.work / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [
                {"targets": [urllib.parse.urlsplit(self.alertmanager_url).netloc]}]}]},
            "scrape_configs": [{"job_name": "ml/pinserve", "static_configs": [{
                "targets": [address],
                "labels": {"namespace": "models-staging", "service": SERVICE,
                           "pod": f"{SERVICE}-pinserve-demo-0", "rollouts_pod_template_hash": "demo"}}]}],
        }
        (self.work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.processes.start("prometheus", [
            shutil.which("prometheus"), f"--config.file={self.work / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.work / 'prometheus-data'}", f"--web.listen-address=127.0.0.1:{port}"])
        prometheus = f"http://127.0.0.1:{port}"
        say(f"  Prometheus {prometheus}: k8s/monitoring/prometheusrule.yaml with every `for` at {DEMO_FOR}")
        rows = [row[:] for _ in range(3) for row in self.train_rows]
        for row in rows:
            row[0] *= 5
        for start in range(0, len(rows), 100):
            chunk = rows[start:start + 100]
            status, _ = http("POST", f"{self.serve_url}/v2/models/{SERVICE}/infer", {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(chunk), 30],
                            "data": [v for row in chunk for v in row]}]})
            expect(status == 200, f"serving the shifted rows answered {status}")
        say(f"  served {len(rows)} rows (version 2's training rows, three times) with mean_radius x5")

        def firing():
            status, body = http("GET", f"{prometheus}/api/v1/alerts")
            return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == "PinserveFeatureDrift"
                    and a["state"] == "firing"] if status == 200 else None
        alerts = wait_until("PinserveFeatureDrift to fire in Prometheus", firing)
        features = sorted(a["labels"]["feature"] for a in alerts)
        self.check(f"Prometheus fires PinserveFeatureDrift for {features}", features == ["mean_radius"])
        notification = wait_until("Alertmanager to deliver it to the webhook", lambda: [
            body for _, body in self.webhook.received
            if body.get("commonLabels", {}).get("alertname") == "PinserveFeatureDrift"])[0]
        self.check(f"Alertmanager delivered it ({notification['status']}, service "
                   f"{notification['commonLabels'].get('service')})",
                   notification["commonLabels"].get("service") == SERVICE)
        event = {"header": {}, "body": notification}
        self.check("the Sensor's filter (k8s/pipelines/sensor.yaml) selects it", sensor_selects(self.sensor, event))
        resolved = json.loads(json.dumps(event))
        resolved["body"]["status"] = "resolved"
        self.check("and would not select it resolved", not sensor_selects(self.sensor, resolved))
        trigger = self.sensor["spec"]["triggers"][0]["template"]["argoWorkflow"]
        parameter = trigger["parameters"][0]
        name = trigger["source"]["resource"]["metadata"]["name"]
        value = lookup(event, parameter["src"]["dataKey"])
        name = value + name if parameter.get("operation") == "prepend" else name + value
        names = {c["metadata"]["name"] for c in self.crons}
        self.check(f"it submits from CronWorkflow {name}, which retrains {SERVICE}",
                   name in names and next(c for c in self.crons if c["metadata"]["name"] == name)
                   is self.cron)

    def run(self) -> int:
        try:
            self.start_services()
            for step in (self.step_1, self.step_2, self.step_3, self.step_4):
                step()
        except (Failure, subprocess.CalledProcessError, KeyError, StopIteration) as err:
            self.checks.append((f"{type(err).__name__}: {err}", False))
            say(f"\nFAILED: {err}")
            for name in ("mlflow", "alertmanager", "serve", "prometheus"):
                if (self.work / "logs" / f"{name}.log").exists():
                    say(f"--- {name} log (end) ---\n{self.processes.log(name)}")
        finally:
            self.processes.stop()
        passed = all(ok for _, ok in self.checks)
        say(f"\n== summary: {sum(ok for _, ok in self.checks)} of {len(self.checks)} checks passed")
        for what, ok in self.checks:
            say(f"  {'ok  ' if ok else 'FAIL'} {what}")
        say(f"  work folder: {self.work}" if self.keep or not passed else "")
        if passed and not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pinserve", required=True)
    parser.add_argument("--trainer-python", required=True)
    parser.add_argument("--mlflow", required=True)
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return Demo(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
