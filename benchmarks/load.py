"""Load with wrk: pools of pre-signed Slack requests, each a fresh interaction, and one run.

Every request in a pool is one Slack would send for a new interaction: its own ``trigger_id``
(the duplicate filter claims it), its own body and so its own signature (claimed too), its own
``response_url`` registered in the sandbox Slack, and for the start form its own tenant. Bodies
are built once per kind from a template the ``SlackDriver`` makes exactly as Slack does, then
only those fields are substituted, and each body is signed (v0, timestamp of the pool's making:
valid for the 5 minutes Bolt allows).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from benchmarks.world import World, bare_tenant

LUA = Path(__file__).with_name("pool.lua")

TRIGGER = "BENCHxTRIGGERx"
RESPONSE = "BENCHxRESPONSEx"
STAMP = "BENCHxACTIONTSx"
TENANT = "BENCHxTENANTx"


@dataclass(frozen=True)
class Template:
    """A request body with placeholders, and what each placeholder is filled with."""

    kind: str
    body: str  # urlencoded, placeholders in it verbatim
    content_type: str
    response_url: dict[str, str | None] | None  # new_response_url's arguments, or None
    fresh_tenant: bool = False


def _sign(secret: bytes, body: bytes, stamp: int) -> str:
    base = b"v0:" + str(stamp).encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def _trigger() -> str:
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}"


def write_pool(world: World, template: Template, size: int, path: Path) -> Path:
    """``size`` fresh, signed requests of ``template`` in wrk's pool format."""
    secret = world.signing_secret.encode()
    stamp = int(time.time())
    base = world.slack_url
    lines: list[str] = []
    for _ in range(size):
        body = template.body.replace(TRIGGER, quote_plus(_trigger()))
        if STAMP in body:
            body = body.replace(STAMP, quote_plus(f"{time.time():.6f}"))
        if template.response_url is not None:
            url = world.slack.new_response_url(base, **template.response_url)  # type: ignore[arg-type]
            body = body.replace(RESPONSE, quote_plus(url))
        if template.fresh_tenant:
            tenant_id = str(uuid.uuid4())
            world.microsoft.tenants[tenant_id] = bare_tenant(tenant_id)
            body = body.replace(TENANT, tenant_id)
        raw = body.encode()
        lines.append(f"{stamp}\t{_sign(secret, raw, stamp)}\t{template.content_type}\t{body}\n")
    path.write_text("".join(lines))
    return path


def form_template(
    kind: str, fields: dict[str, str], response_url: dict[str, str | None]
) -> Template:
    """A slash command's form fields; ``trigger_id`` and ``response_url`` become placeholders."""
    fields = dict(fields, trigger_id=TRIGGER, response_url=RESPONSE)
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in fields.items())
    body = body.replace(quote_plus(TRIGGER), TRIGGER).replace(quote_plus(RESPONSE), RESPONSE)
    return Template(kind, body, "application/x-www-form-urlencoded", response_url)


def interaction_template(
    kind: str,
    payload: dict[str, Any],
    response_url: dict[str, str | None] | None,
    *,
    fresh_tenant: bool = False,
) -> Template:
    """An interaction payload (``payload=`` form field); fields to vary become placeholders."""
    payload = json.loads(json.dumps(payload))
    payload["trigger_id"] = TRIGGER
    if "response_url" in payload:
        payload["response_url"] = RESPONSE
    for action in payload.get("actions", []):
        action["action_ts"] = STAMP
    text = json.dumps(payload, separators=(",", ":"))
    body = "payload=" + quote_plus(text)
    for placeholder in (TRIGGER, RESPONSE, STAMP, TENANT):
        body = body.replace(quote_plus(placeholder), placeholder)
    # The placeholders sit inside JSON strings: what replaces them must be JSON-safe too
    # (trigger ids, URLs, timestamps and GUIDs are), and is urlencoded on substitution.
    return Template(
        kind, body, "application/x-www-form-urlencoded", response_url, fresh_tenant=fresh_tenant
    )


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    wrapped: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


async def run_wrk(
    url: str,
    pool: Path,
    *,
    connections: int,
    duration: float,
    workdir: Path,
    delay_ms: int = 0,
) -> WrkResult:
    """One wrk run of ``duration`` seconds over ``connections`` connections."""
    threads = max(1, min(2, connections))
    script = LUA
    if delay_ms:
        script = workdir / f"paced-{delay_ms}.lua"
        script.write_text(LUA.read_text() + f"\nfunction delay()\n  return {delay_ms}\nend\n")
    seconds = max(1, round(duration))
    process = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        str(pool),
        str(threads),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    found = re.search(r"WRK_JSON (\{.*\})", out.decode())
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out.decode()} {err.decode()}")
    data = json.loads(found.group(1))
    return WrkResult(
        requests=int(data["requests"]),
        duration=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors={
            name: int(data[name])
            for name in ("connect", "read", "write", "status", "timeout")
            if int(data[name])
        },
        wrapped=int(data["wrapped"]),
    )
