"""The real tollgate binary run with each deployment's configuration, as its container
would run it."""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from deploy_common import (
    DEPLOY,
    EXIT_TIMEOUT_S,
    IMAGE_DATA_DIR,
    IMAGE_UID,
    STARTUP_TIMEOUT_S,
    Checks,
)
from deploy_chart import by_kind


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
        schema = f"tg_{int(time.time())}_deploy_{uuid.uuid4().hex}"
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
                 # A key's buckets on a model: tollgate:rl:v1:{<team id>}:m:<key id>:...
                 f"tollgate:rl:v1:*:m:{key['id']}:*"],
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
