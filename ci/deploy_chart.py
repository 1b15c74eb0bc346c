"""The Helm chart: `helm lint` and `helm template` through Helm's Go SDK, the rendered
manifests against the Kubernetes schemas and against what tollgate serves and reads,
and the settings the chart must refuse."""

from __future__ import annotations

import json
import tomllib

import helm_python as helm
import kubernetes_validate
import yaml

from deploy_common import (
    CHART,
    HA_VALUES,
    IMAGE_DATA_DIR,
    KUBERNETES_VERSION,
    Checks,
    env_vars_read,
    served_paths,
)


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
                 env.get("TOLLGATE_CONFIG", {}).get("value")
                 == f"{mounts.get('config')}/tollgate.toml"
                 and volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"])
    spill = tomllib.loads(config).get("ledger", {}).get("spill_dir", "")
    checks.check(f"helm ({label}): the spill is on the data volume",
                 mounts.get("data") == IMAGE_DATA_DIR and spill.startswith(IMAGE_DATA_DIR + "/"))

    secrets = {s["metadata"]["name"]: s for s in kinds.get("Secret", [])}
    existing = {ref["existingSecret"] for ref in secret_refs(values) if ref.get("existingSecret")}
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
