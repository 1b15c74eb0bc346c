"""Static checks of the Dockerfile and the docker-compose stack (with its Prometheus
and Grafana files)."""

from __future__ import annotations

import re
import subprocess
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from compose_spec import PyCompose

from deploy_common import (
    COMPOSE,
    DEPLOY,
    IMAGE_DATA_DIR,
    IMAGE_UID,
    ROOT,
    Checks,
    env_vars_read,
    served_paths,
)


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
    declared = manifest.get("bin", []) + [manifest.get("lib", {})]
    targets = [t["path"] for t in declared if "path" in t]
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
