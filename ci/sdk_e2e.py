#!/usr/bin/env python3
"""End-to-end check of tollgate with the real `openai` Python SDK.

Starts tollgate-mock-upstream and tollgate (temp dir, free port, temp SQLite ledger),
creates a team and a tollgate key through the admin API, makes five chat completions
through the SDK with that key (plain, stream, abandoned stream, stream with
include_usage, and one at service_tier="flex"), checks that a spent budget's 429 is not
retried by the SDK, stops tollgate with SIGTERM and checks the five ledger rows.

Then the same through each other upstream kind: one more mock per provider
(`--kind azure|anthropic|gemini|openai_compatible`, each with its own fake key, which
answers 401 to any other auth or to another provider's key), one [[upstreams]] per kind
(Azure twice: its v1 path and a deployment), and a plain and a streamed completion
each. Their ledger rows must name the provider, the real model (a deployment priced as
the model it serves) and the provider's tokens (Anthropic's cache reads and writes,
Gemini's cached and reasoning tokens), at a cost computed here with `decimal.Decimal`
from `tollgate prices --json`.

    python ci/sdk_e2e.py --tollgate target/debug/tollgate \
        --mock target/debug/tollgate-mock-upstream

Prints one PASS/FAIL line per check; exits non-zero if any check fails. Needs only the
standard library and `openai`.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
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

# One fake key per provider, in the environment tollgate reads them from; every mock
# refuses the others'. `tokens` is what the mock's usage says for 20 completion tokens
# (benches/mock_upstream.rs, provider_usage): prompt, cached (reads), cache writes,
# reasoning.
PROVIDERS = {
    "azure": {"key": "e2e-key-azure", "answered": "gpt-4o-2024-08-06",
              "tokens": (9, 0, 0, 0)},
    "anthropic": {"key": "e2e-key-anthropic", "answered": "claude-haiku-4-5-20251001",
                  "tokens": (509, 200, 300, 0)},
    "gemini": {"key": "e2e-key-gemini", "answered": "gemini-2.5-flash",
               "tokens": (409, 400, 0, 5)},
    "openai_compatible": {"key": "e2e-key-local", "answered": "llama-3-8b",
                          "tokens": (9, 0, 0, 0)},
}
# Each case: (name, model asked for, mock kind, upstream name, model priced as).
KIND_CASES = [
    ("azure", "azure/gpt-4o", "azure", "azure", "gpt-4o"),
    ("azure-deployment", "azd/e2e-4o", "azure", "azure-deployments", "gpt-4o"),
    ("anthropic", "claude-haiku-4-5", "anthropic", "anthropic", "claude-haiku-4-5"),
    ("gemini", "gemini-2.5-flash", "gemini", "gemini", "gemini-2.5-flash"),
    ("local", "llama-3-8b", "openai_compatible", "local", "llama-3-8b"),
]
# A local model has no built-in price; the config gives it one (USD per 1M).
LOCAL_PRICE = {"input": "0.05", "output": "0.10"}

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


def start_mock(binary: str, log_dir: Path, kind: str | None = None
               ) -> tuple[subprocess.Popen, int]:
    args = [binary, "--listen", "127.0.0.1:0"]
    if kind is not None:
        args += ["--kind", kind, "--key", PROVIDERS[kind]["key"]]
        for other, spec in PROVIDERS.items():
            if other != kind:
                args += ["--refuse-key", spec["key"]]
    with open(log_dir / f"mock-{kind or 'openai'}.stderr", "wb") as stderr:
        mock = subprocess.Popen(
            args,
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


def key_env(kind: str) -> str:
    return f"E2E_{kind.upper()}_KEY"


def write_config(tmp: Path, port: int, mock_port: int,
                 kind_ports: dict[str, int]) -> tuple[Path, Path]:
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
name = "azure"
kind = "azure"
base_url = "http://127.0.0.1:{kind_ports["azure"]}/openai/v1"
api_key_env = "{key_env("azure")}"
models = ["azure/*"]

[[upstreams]]
name = "azure-deployments"
kind = "azure"
base_url = "http://127.0.0.1:{kind_ports["azure"]}/openai"
api_key_env = "{key_env("azure")}"
models = ["azd/*"]
deployments = {{ "e2e-4o" = "gpt-4o" }}
api_version = "2024-10-21"

[[upstreams]]
name = "anthropic"
kind = "anthropic"
base_url = "http://127.0.0.1:{kind_ports["anthropic"]}/v1"
api_key_env = "{key_env("anthropic")}"
models = ["claude-*"]

[[upstreams]]
name = "gemini"
kind = "gemini"
base_url = "http://127.0.0.1:{kind_ports["gemini"]}/v1beta/openai"
api_key_env = "{key_env("gemini")}"
models = ["gemini-*"]

[[upstreams]]
name = "local"
kind = "openai_compatible"
base_url = "http://127.0.0.1:{kind_ports["openai_compatible"]}/v1"
api_key_env = "{key_env("openai_compatible")}"
models = ["llama-*"]

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:{mock_port}/v1"
models = ["*"]

[pricing.models."llama-3-8b"]
input = "{LOCAL_PRICE["input"]}"
output = "{LOCAL_PRICE["output"]}"
as_of = "2026-12-02"
source = "sdk_e2e"

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


# === one upstream of each kind ===


def mocks_refuse_foreign_auth(kind_ports: dict[str, int], checks: Checks) -> None:
    """The mocks themselves: without them refusing, the kind checks below prove nothing."""
    def status(port: int, path: str, headers: dict) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", method="POST", headers=headers,
            data=json.dumps({"model": "m", "messages": MESSAGES}).encode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    own = {
        "azure": lambda key: {"api-key": key},
        "anthropic": lambda key: {"x-api-key": key, "anthropic-version": "2023-06-01"},
        "gemini": lambda key: {"Authorization": f"Bearer {key}"},
        "openai_compatible": lambda key: {"Authorization": f"Bearer {key}"},
    }
    paths = {"azure": "/openai/v1/chat/completions", "anthropic": "/v1/chat/completions",
             "gemini": "/v1beta/openai/chat/completions",
             "openai_compatible": "/v1/chat/completions"}
    for kind, port in kind_ports.items():
        key = PROVIDERS[kind]["key"]
        other = next(spec["key"] for name, spec in PROVIDERS.items() if name != kind)
        path = paths[kind]
        checks.equal(f"mock {kind}: its own auth is answered", status(port, path, own[kind](key)),
                     200)
        checks.equal(f"mock {kind}: another provider's key in its header is refused",
                     status(port, path, own[kind](other)), 401)
        checks.equal(f"mock {kind}: another provider's key in any header is refused",
                     status(port, path, {**own[kind](key), "x-extra": other}), 401)
        checks.equal(f"mock {kind}: no auth is refused", status(port, path, {}), 401)
    checks.equal("mock azure: a bearer is refused",
                 status(kind_ports["azure"], paths["azure"],
                        {"api-key": PROVIDERS["azure"]["key"],
                         "Authorization": "Bearer " + PROVIDERS["azure"]["key"]}), 401)
    checks.equal("mock azure: a deployment path without api-version is not found",
                 status(kind_ports["azure"], "/openai/deployments/d/chat/completions",
                        own["azure"](PROVIDERS["azure"]["key"])), 404)


def through_kind(client: openai.OpenAI, checks: Checks, name: str, model: str,
                 kind: str) -> None:
    answered = PROVIDERS[kind]["answered"]
    prompt, _, _, _ = PROVIDERS[kind]["tokens"]
    completion = client.chat.completions.create(
        model=model, messages=MESSAGES, extra_headers={"x-request-id": f"e2e-{name}-plain"})
    checks.equal(f"{name} plain: content", completion.choices[0].message.content, MOCK_TEXT)
    checks.equal(f"{name} plain: model", completion.model, answered)
    usage = completion.usage
    checks.equal(f"{name} plain: usage",
                 usage and (usage.prompt_tokens, usage.completion_tokens),
                 (prompt, MOCK_COMPLETION_TOKENS))
    chunks = list(client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True,
        extra_headers={"x-request-id": f"e2e-{name}-stream"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    checks.equal(f"{name} stream: text", text, MOCK_TEXT)
    checks.check(f"{name} stream: the usage chunk tollgate asked for stays hidden",
                 all(c.choices and c.usage is None for c in chunks),
                 f"{len(chunks)} chunks")


def catalog_prices(tollgate: str) -> dict:
    """The built-in catalog, USD per 1M tokens as exact decimals."""
    output = subprocess.run([tollgate, "prices", "--json"], check=True, capture_output=True,
                            text=True, timeout=60).stdout
    return json.loads(output, parse_float=Decimal)["models"]


def expected_cost_pico(price: dict, tokens: tuple[int, int, int, int]) -> int:
    """docs/src/providers.md's formula: (prompt − cached − cache_write) × input + cached ×
    cached_input + cache_write × cache_write_rate + completion × output; a missing
    cached or write rate falls back to input. USD per 1M × tokens = micro-USD."""
    prompt, cached, written, _ = tokens
    rate = lambda field: Decimal(str(price[field]))  # noqa: E731
    fallback = lambda field: rate(field) if price.get(field) is not None else rate("input")  # noqa: E731
    micro = ((prompt - cached - written) * rate("input") + cached * fallback("cached_input")
             + written * fallback("cache_write") + MOCK_COMPLETION_TOKENS * rate("output"))
    pico = micro * 1_000_000
    if pico != pico.to_integral_value():
        raise ValueError(f"cost {micro} µ$ is not a whole number of pico-dollars")
    return int(pico)


def check_kind_rows(rows: list[dict], checks: Checks, catalog: dict) -> None:
    by_id = {row["request_id"]: row for row in rows}
    for name, model, kind, upstream, priced in KIND_CASES:
        price = LOCAL_PRICE if kind == "openai_compatible" else catalog.get(priced)
        if not checks.check(f"ledger {name}: {priced} has a price", price is not None,
                            "not in the catalog"):
            continue
        prompt, cached, written, reasoning = PROVIDERS[kind]["tokens"]
        cost = expected_cost_pico(price, PROVIDERS[kind]["tokens"])
        for streamed in (0, 1):
            request_id = f"e2e-{name}-{'stream' if streamed else 'plain'}"
            found = by_id.get(request_id)
            if not checks.check(f"ledger {request_id}: row recorded", found is not None,
                                f"request_ids: {sorted(by_id)}"):
                continue
            expected = {
                "provider": kind, "upstream": upstream, "status": 200, "outcome": "ok",
                "streamed": streamed, "usage_source": "upstream",
                "model_requested": model, "priced_model": priced,
                "model_answered": PROVIDERS[kind]["answered"],
                "prompt_tokens": prompt, "cached_tokens": cached,
                "cache_write_tokens": written, "reasoning_tokens": reasoning,
                "completion_tokens": MOCK_COMPLETION_TOKENS, "cost_pico": cost,
            }
            checks.equal(f"ledger {request_id}: fields",
                         {k: found.get(k) for k in expected}, expected)


# === the ledger ===


def check_ledger(db: Path, checks: Checks, key: dict, catalog: dict) -> None:
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
    kind_ids = {f"e2e-{case[0]}-{way}" for case in KIND_CASES for way in ("plain", "stream")}
    kind_rows = [row for row in rows if row["request_id"] in kind_ids]
    checks.equal("ledger: a plain and a streamed row per upstream kind", len(kind_rows),
                 len(kind_ids))
    check_kind_rows(kind_rows, checks, catalog)
    rows = [row for row in rows if row["request_id"] not in kind_ids]
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
    kind_mocks: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        tollgate_log = tmp / "tollgate.stderr"
        try:
            mock, mock_port = start_mock(args.mock, tmp)
            kind_ports = {}
            for kind in PROVIDERS:
                kind_mock, kind_ports[kind] = start_mock(args.mock, tmp, kind)
                kind_mocks.append(kind_mock)
            catalog = catalog_prices(args.tollgate)
            port = free_port()
            config, db = write_config(tmp, port, mock_port, kind_ports)
            env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
            env.pop("RUST_LOG", None)
            env["TOLLGATE_ADMIN_KEY"] = ADMIN_KEY
            for kind, spec in PROVIDERS.items():
                env[key_env(kind)] = spec["key"]
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
            checks.run("mocks: refusals", lambda: mocks_refuse_foreign_auth(kind_ports, checks))
            for name, model, kind, _, _ in KIND_CASES:
                checks.run(f"{name}: requests", lambda name=name, model=model, kind=kind:
                           through_kind(client, checks, name, model, kind))

            tollgate.send_signal(signal.SIGTERM)
            try:
                code = tollgate.wait(timeout=EXIT_TIMEOUT_S)
                checks.equal("tollgate: exits 0 after SIGTERM", code, 0)
            except subprocess.TimeoutExpired:
                checks.check("tollgate: exits 0 after SIGTERM", False,
                             f"still running {EXIT_TIMEOUT_S:.0f}s after SIGTERM")
            check_ledger(db, checks, key, catalog)
        except Exception as error:  # noqa: BLE001 - any setup failure fails the run
            checks.check("setup", False, f"{type(error).__name__}: {error}")
            traceback.print_exc()
        finally:
            stop(tollgate)
            stop(mock)
            for kind_mock in kind_mocks:
                stop(kind_mock)
            if checks.failed:
                print_log("tollgate output", tollgate_log)
                for log in sorted(tmp.glob("mock-*.stderr")):
                    print_log("mock stderr", log)

    total = checks.passed + len(checks.failed)
    if checks.failed:
        print(f"sdk_e2e: FAIL ({len(checks.failed)} of {total} checks failed: "
              f"{', '.join(checks.failed)})", flush=True)
        return 1
    print(f"sdk_e2e: PASS ({total} checks)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
