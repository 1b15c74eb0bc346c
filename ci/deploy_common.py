"""What the deployment checks share: paths, the image's contract, the check log, and
what tollgate serves and reads, taken from its sources."""

from __future__ import annotations

import re
import tomllib
import traceback
from pathlib import Path

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
