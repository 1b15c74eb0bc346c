#!/usr/bin/env python3
"""End-to-end check of tollgate with the real `openai` Python SDK.

Starts tollgate-mock-upstream and tollgate (temp dir, free port, temp SQLite ledger),
creates a team and a tollgate key through the admin API, makes five chat completions
through the SDK with that key (plain, stream, abandoned stream, stream with
include_usage, and one at service_tier="flex"), checks that a spent budget's 429 is not
retried by the SDK, stops tollgate with SIGTERM and checks the five ledger rows.

    python ci/sdk_e2e.py --tollgate target/debug/tollgate \
        --mock target/debug/tollgate-mock-upstream

Prints one PASS/FAIL line per check; exits non-zero if any check fails. Needs only the
standard library and `openai`.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import openai

ADMIN_KEY = "e2e-admin-key"

# What tollgate-mock-upstream answers (benches/mock_upstream.rs).
MOCK_TEXT = (
    "The quick brown fox jumps over the lazy dog and then runs back home to rest in the warm sun"
)
MOCK_PROMPT_TOKENS = 9
MOCK_COMPLETION_TOKENS = 20
MOCK_MODEL = "gpt-4o-mini-2024-07-18"
# gpt-4o-mini offers no flex tier in the built-in catalog; the config gives it a flex
# sheet (micro-USD per 1M tokens), so the flex row is priced at it.
FLEX_RATES = {"input_rate": 75_000, "cached_input_rate": 37_500, "output_rate": 300_000}
STANDARD_RATES = {"input_rate": 150_000, "cached_input_rate": 75_000, "output_rate": 600_000}

STARTUP_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 45.0
MESSAGES = [{"role": "user", "content": "Say something about a fox."}]


class Checks:
    """Collects PASS/FAIL lines; a failed check never stops the later ones."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

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

    def run(self, name: str, step) -> object:
        """Runs one SDK step; an exception fails it instead of ending the script."""
        try:
            return step()
        except Exception as error:  # noqa: BLE001 - report any SDK or HTTP failure
            self.check(name, False, f"{type(error).__name__}: {error}")
            traceback.print_exc()
            return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mock(binary: str, log_dir: Path) -> tuple[subprocess.Popen, int]:
    with open(log_dir / "mock.stderr", "wb") as stderr:
        mock = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    assert mock.stdout is not None
    ready, _, _ = select.select([mock.stdout], [], [], STARTUP_TIMEOUT_S)
    line = mock.stdout.readline().decode().strip() if ready else "(nothing within the timeout)"
    if not line.startswith("listening on "):
        raise RuntimeError(f"mock upstream did not start: first line {line!r}")
    return mock, int(line.rsplit(":", 1)[1])


def write_config(tmp: Path, port: int, mock_port: int) -> tuple[Path, Path]:
    db = tmp / "ledger.db"
    config = tmp / "tollgate.toml"
    config.write_text(
        f"""[server]
listen = "127.0.0.1:{port}"
drain_timeout = "30s"

[database]
url = "sqlite://{db}"

[log]
filter = "info"

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:{mock_port}/v1"
models = ["*"]

[pricing.models."gpt-4o-mini".flex]
input = "0.075"
cached_input = "0.0375"
output = "0.30"
as_of = "2026-12-02"
source = "sdk_e2e"
"""
    )
    return config, db


def admin_post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 201:
            raise RuntimeError(f"POST {path}: {response.status}")
        return json.loads(response.read())


def budget_not_retried(port: int, checks: Checks) -> None:
    """A key whose budget cannot cover one request: the SDK (max_retries=2, which
    retries every other 429) must give up after the first answer."""
    key = admin_post(port, "/admin/keys", {"team": "e2e", "name": "broke",
                                           "budget_usd": "0.000001", "budget_period": "total"})
    sent = []
    http = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url)]})
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key["key"],
                           max_retries=2, timeout=30, http_client=http)
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        checks.check("budget: refused", False, "the request was admitted")
    except openai.RateLimitError as error:
        checks.equal("budget: code insufficient_quota", error.code, "insufficient_quota")
        checks.equal("budget: x-should-retry", error.response.headers.get("x-should-retry"),
                     "false")
    checks.equal("budget: the SDK did not retry", len(sent), 1)


RATE_LIMIT_RPM = 60


def rate_limit_backoff(port: int, checks: Checks) -> None:
    """A key limited to 60 requests a minute: its burst of 60 goes through, the 61st
    gets tollgate's 429 with retry-after-ms (~1 s), and the SDK (max_retries=2) waits
    and succeeds, as it would against OpenAI's own limit."""
    key = admin_post(port, "/admin/keys", {"team": "e2e", "name": "limited",
                                           "rpm": RATE_LIMIT_RPM})
    statuses = []
    http = httpx.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key["key"],
                           max_retries=2, timeout=30, http_client=http)
    started = time.monotonic()
    for _ in range(RATE_LIMIT_RPM + 1):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "e2e-limited"})
    elapsed = time.monotonic() - started
    checks.check("rate limit: the SDK met a 429", 429 in statuses, f"statuses {statuses}")
    checks.equal("rate limit: every request succeeded in the end",
                 statuses.count(200), RATE_LIMIT_RPM + 1)
    checks.check("rate limit: the SDK waited about as long as retry-after said",
                 0.5 < elapsed < 10, f"{elapsed:.2f} s")


def wait_healthy(port: int, tollgate: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/healthz"
    while time.monotonic() < deadline:
        if tollgate.poll() is not None:
            raise RuntimeError(f"tollgate exited during startup with code {tollgate.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"tollgate did not answer {url} within {STARTUP_TIMEOUT_S:.0f}s")


# === the five SDK calls ===


def plain(client: openai.OpenAI, checks: Checks) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        extra_headers={"x-request-id": "e2e-plain"},
    )
    checks.equal("plain: content", completion.choices[0].message.content, MOCK_TEXT)
    checks.equal("plain: model", completion.model, MOCK_MODEL)
    usage = completion.usage
    checks.check("plain: usage present", usage is not None, "no usage in the response")
    if usage is not None:
        checks.equal(
            "plain: usage",
            (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
            (MOCK_PROMPT_TOKENS, MOCK_COMPLETION_TOKENS, MOCK_PROMPT_TOKENS + MOCK_COMPLETION_TOKENS),
        )


def stream(client: openai.OpenAI, checks: Checks) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-request-id": "e2e-stream"},
        )
    )
    empty = [i for i, chunk in enumerate(chunks) if not chunk.choices]
    checks.check(
        "stream: no chunk with empty choices (usage chunk hidden)",
        not empty,
        f"chunks {empty} of {len(chunks)} have empty choices",
    )
    with_usage = [i for i, chunk in enumerate(chunks) if chunk.usage is not None]
    checks.check(
        "stream: no usage reaches a client that did not ask",
        not with_usage,
        f"chunks {with_usage} carry usage",
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    checks.equal("stream: text", text, MOCK_TEXT)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    checks.equal("stream: finish_reason", finish, ["stop"])


def abandoned(client: openai.OpenAI, checks: Checks) -> None:
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={
            "x-request-id": "e2e-abandoned",
            "x-mock-chunk-delay-ms": "50",
            "x-mock-chunks": "40",
        },
    )
    received = []
    for chunk in response:
        received.append(chunk)
        if len(received) == 3:
            break
    response.close()
    checks.equal("abandoned: read 3 chunks, then closed", len(received), 3)


def include_usage(client: openai.OpenAI, checks: Checks) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": "e2e-include-usage"},
        )
    )
    usage_chunks = [c for c in chunks if c.usage is not None]
    checks.equal("include_usage: one usage chunk", len(usage_chunks), 1)
    if usage_chunks:
        last = chunks[-1]
        checks.check(
            "include_usage: usage chunk is last, with empty choices",
            last.usage is not None and last.choices == [],
            f"last chunk: {last.model_dump_json()}",
        )
        usage = usage_chunks[0].usage
        checks.equal(
            "include_usage: usage",
            (usage.prompt_tokens, usage.completion_tokens),
            (MOCK_PROMPT_TOKENS, MOCK_COMPLETION_TOKENS),
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    checks.equal("include_usage: text", text, MOCK_TEXT)


def flex(client: openai.OpenAI, checks: Checks) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        service_tier="flex",
        extra_headers={"x-request-id": "e2e-flex"},
    )
    checks.equal("flex: content", completion.choices[0].message.content, MOCK_TEXT)
    checks.equal("flex: the answer says which tier served it", completion.service_tier, "flex")


# === the ledger ===


def check_ledger(db: Path, checks: Checks, key: dict) -> None:
    if not checks.check("ledger: database file exists", db.exists(), f"{db} missing"):
        return
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in connection.execute("SELECT * FROM requests ORDER BY ts_ms, id")]
    finally:
        connection.close()
    limited = [row for row in rows if row["request_id"] == "e2e-limited"]
    checks.equal("ledger: one row per admitted rate-limited request", len(limited),
                 RATE_LIMIT_RPM + 1)
    rows = [row for row in rows if row["request_id"] != "e2e-limited"]
    print("ledger rows:", flush=True)
    for row in rows:
        print("  " + json.dumps(row, default=str), flush=True)
    checks.equal("ledger: exactly 5 rows", len(rows), 5)
    by_id = {row["request_id"]: row for row in rows}

    def row(name: str, request_id: str) -> dict | None:
        found = by_id.get(request_id)
        checks.check(f"{name}: row recorded under request_id {request_id}", found is not None,
                     f"request_ids: {sorted(by_id)}")
        return found

    def fields(name: str, found: dict | None, expected: dict) -> None:
        if found is not None:
            checks.equal(name, {k: found.get(k) for k in expected}, expected)

    common = {"endpoint": "chat.completions", "upstream": "mock", "status": 200,
              "key_id": key["id"], "team_id": key["team_id"], "caller": key["prefix"]}
    plain_row = row("ledger plain", "e2e-plain")
    # 9 prompt tokens at $0.15 and 20 completion tokens at $0.60 per 1M: 13.35 µ$.
    fields("ledger plain: fields", plain_row, {
        **common, "streamed": 0, "usage_source": "upstream", "outcome": "ok",
        "prompt_tokens": MOCK_PROMPT_TOKENS, "completion_tokens": MOCK_COMPLETION_TOKENS,
        "model_answered": MOCK_MODEL, "upstream_request_id": "req_mock",
        "service_tier_requested": None, "service_tier": "default",
        "price_variant": "standard", **STANDARD_RATES, "cost_pico": 13_350_000,
    })
    flex_row = row("ledger flex", "e2e-flex")
    # The same tokens at the flex sheet: 9 × 0.075 + 20 × 0.30 = 6.675 µ$.
    fields("ledger flex: fields", flex_row, {
        **common, "streamed": 0, "usage_source": "upstream", "outcome": "ok",
        "prompt_tokens": MOCK_PROMPT_TOKENS, "completion_tokens": MOCK_COMPLETION_TOKENS,
        "model_answered": MOCK_MODEL, "service_tier_requested": "flex",
        "service_tier": "flex", "price_variant": "flex", **FLEX_RATES,
        "cost_pico": 6_675_000,
    })
    stream_row = row("ledger stream", "e2e-stream")
    fields("ledger stream: fields", stream_row, {
        **common, "streamed": 1, "usage_source": "upstream", "outcome": "ok",
        "prompt_tokens": MOCK_PROMPT_TOKENS, "completion_tokens": MOCK_COMPLETION_TOKENS,
    })
    abandoned_row = row("ledger abandoned", "e2e-abandoned")
    fields("ledger abandoned: fields", abandoned_row, {
        **common, "streamed": 1, "usage_source": "estimated", "outcome": "client_disconnected",
    })
    if abandoned_row is not None:
        tokens = abandoned_row.get("completion_tokens")
        checks.check(
            "ledger abandoned: 0 < completion_tokens < 40",
            isinstance(tokens, int) and 0 < tokens < 40,
            f"completion_tokens = {tokens!r}",
        )
    usage_row = row("ledger include_usage", "e2e-include-usage")
    fields("ledger include_usage: fields", usage_row, {
        **common, "streamed": 1, "usage_source": "upstream", "outcome": "ok",
        "prompt_tokens": MOCK_PROMPT_TOKENS, "completion_tokens": MOCK_COMPLETION_TOKENS,
    })


# === driver ===


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def print_log(title: str, path: Path) -> None:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    print(f"----- {title} ({path}) -----\n{text.rstrip()}\n----- end of {title} -----", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tollgate", required=True, help="path of the tollgate binary")
    parser.add_argument("--mock", required=True, help="path of tollgate-mock-upstream")
    args = parser.parse_args()

    checks = Checks()
    mock = tollgate = None
    with tempfile.TemporaryDirectory(prefix="tollgate-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        tollgate_log = tmp / "tollgate.stderr"
        try:
            mock, mock_port = start_mock(args.mock, tmp)
            port = free_port()
            config, db = write_config(tmp, port, mock_port)
            env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
            env.pop("RUST_LOG", None)
            env["TOLLGATE_ADMIN_KEY"] = ADMIN_KEY
            with open(tollgate_log, "wb") as log:
                tollgate = subprocess.Popen(
                    [args.tollgate, "serve", "--config", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            wait_healthy(port, tollgate)
            print(f"tollgate on 127.0.0.1:{port}, mock on 127.0.0.1:{mock_port}", flush=True)

            admin_post(port, "/admin/teams", {"name": "e2e"})
            key = admin_post(port, "/admin/keys", {"team": "e2e", "name": "sdk"})
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key=key["key"], max_retries=0,
                timeout=30,
            )
            for name, step in [("plain", plain), ("stream", stream),
                               ("abandoned", abandoned), ("include_usage", include_usage),
                               ("flex", flex)]:
                checks.run(f"{name}: request", lambda step=step: step(client, checks))
            checks.run("budget: request", lambda: budget_not_retried(port, checks))
            checks.run("rate limit: requests", lambda: rate_limit_backoff(port, checks))

            tollgate.send_signal(signal.SIGTERM)
            try:
                code = tollgate.wait(timeout=EXIT_TIMEOUT_S)
                checks.equal("tollgate: exits 0 after SIGTERM", code, 0)
            except subprocess.TimeoutExpired:
                checks.check("tollgate: exits 0 after SIGTERM", False,
                             f"still running {EXIT_TIMEOUT_S:.0f}s after SIGTERM")
            check_ledger(db, checks, key)
        except Exception as error:  # noqa: BLE001 - any setup failure fails the run
            checks.check("setup", False, f"{type(error).__name__}: {error}")
            traceback.print_exc()
        finally:
            stop(tollgate)
            stop(mock)
            if checks.failed:
                print_log("tollgate output", tollgate_log)
                print_log("mock stderr", tmp / "mock.stderr")

    total = checks.passed + len(checks.failed)
    if checks.failed:
        print(f"sdk_e2e: FAIL ({len(checks.failed)} of {total} checks failed: "
              f"{', '.join(checks.failed)})", flush=True)
        return 1
    print(f"sdk_e2e: PASS ({total} checks)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
