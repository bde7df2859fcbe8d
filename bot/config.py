"""Configuration: read once from the environment (and an optional ``.env``) into frozen objects.

Every problem is collected before anything starts, so an operator fixes them all in one go:
``ConfigError`` carries the full list and its message names each variable. Secrets are wrapped in
``Secret`` so that no ``repr``, log line or error message can show them.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "AppCredentials",
    "ConfigError",
    "InlineService",
    "Mode",
    "Secret",
    "Settings",
    "load_settings",
    "sealing_key_material",
    "split_ranges",
]

_SLACK_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
# RFC 5322 field-name: printable US-ASCII except the colon (Exchange's HeaderName takes these).
_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]{1,128}$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")

#: Exchange names (connectors, rules, groups) are at most 64 characters; the longest name
#: provisioning derives is the prefix plus this suffix (DESIGN §3).
NAME_LIMIT = 64
LONGEST_NAME_SUFFIX = " Incoming Move to Junk Folder Transport Rule"
MIN_PREFIX_LENGTH = 6
#: METRICS_TOKEN: long enough not to be guessed, one printable word (an HTTP header value).
MIN_METRICS_TOKEN_LENGTH = 24
_TOKEN = re.compile(r"^[\x21-\x7e]+$")
#: Connection filter IP Allow List: /24 to /32 entries, at most 1273 of them (Defender docs).
ALLOW_LIST_MIN_PREFIX = 24
ALLOW_LIST_LIMIT = 1273


class Mode(StrEnum):
    """What the process is started to do; each mode needs a different set of Slack credentials."""

    HTTP = "serve"
    SOCKET = "socket"
    CHECK = "check"


class Secret:
    """A value that must never be printed: ``repr`` and ``str`` hide it, ``reveal`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class AppCredentials:
    """One Entra app registration: its client id and exactly one credential."""

    client_id: str
    secret: Secret | None
    certificate_path: Path | None


@dataclass(frozen=True)
class InlineService:
    """Where the protection service lives, as Exchange must be told (DESIGN §3)."""

    name_prefix: str
    inbound_smart_host: str
    outbound_smart_host: str
    ip_ranges: tuple[str, ...]
    tls_certificate_name: str
    scanned_header: str

    @property
    def allow_list_ranges(self) -> tuple[str, ...]:
        """``ip_ranges`` as the IP Allow List takes them: wider ranges split into /24s, a single
        address written bare."""
        return split_ranges(self.ip_ranges, ALLOW_LIST_MIN_PREFIX)


def split_ranges(ranges: tuple[str, ...], min_prefix: int) -> tuple[str, ...]:
    """IPv4 ``ranges`` split into networks no wider than ``/min_prefix`` (in order, no repeats)."""
    entries: list[str] = []
    for item in ranges:
        network = ipaddress.ip_network(item, strict=False)
        parts: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = (
            [network]
            if network.prefixlen >= min_prefix
            else list(network.subnets(new_prefix=min_prefix))
        )
        for part in parts:
            text = str(part.network_address) if part.num_addresses == 1 else str(part)
            if text not in entries:
                entries.append(text)
    return tuple(entries)


@dataclass(frozen=True)
class Settings:
    slack_bot_token: Secret
    slack_signing_secret: Secret | None
    slack_app_token: Secret | None
    slack_api_url: str
    redis_url: Secret
    public_url: str
    host: str
    port: int
    admins: tuple[str, ...]
    approvers: tuple[str, ...]
    notify_channel: str | None
    mailflow_app: AppCredentials
    dirsync_app: AppCredentials
    microsoft_login_url: str
    microsoft_graph_url: str
    microsoft_exchange_url: str
    inline: InlineService
    session_idle_seconds: int = 7 * 24 * 3600
    audit_retention_seconds: int = 90 * 24 * 3600
    tenant_lookup_budget_seconds: float = 1.5
    role_request_remind_seconds: int = 4 * 3600
    role_request_expire_seconds: int = 24 * 3600
    # /metrics answers only ``Authorization: Bearer <metrics_token>``; without one it is off.
    metrics_token: Secret | None = None
    # Redis topology (DESIGN §6): one server at ``redis_url`` unless one of these says otherwise.
    redis_cluster: bool = False
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    redis_sentinel_password: Secret | None = None

    @property
    def callback_url(self) -> str:
        return f"{self.public_url}/microsoft/callback"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason, one per variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"provision-inline cannot start: {len(problems)} configuration problem(s):\n{lines}\n"
            "Set these variables in the environment or in a .env file (see .env.example)."
        )


class _Reader:
    """Reads variables and records problems instead of stopping at the first one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def required(self, name: str, why: str) -> str:
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is missing: {why}.")
            return ""
        return value

    def checked(self, name: str, value: str, check: Callable[[str], str | None]) -> str:
        if value:
            problem = check(value)
            if problem:
                self.problems.append(f"{name} {problem}")
        return value

    def url(self, name: str, default: str | None, why: str, *, https_only: bool = False) -> str:
        value = self.raw(name) or default
        if value is None:
            self.problems.append(f"{name} is missing: {why}.")
            return ""
        parts = urlsplit(value)
        allowed = ("https",) if https_only else ("http", "https")
        if parts.scheme not in allowed or not parts.netloc:
            self.problems.append(
                f"{name} must be an absolute {' or '.join(allowed)} URL (got a value without "
                f"scheme {'/'.join(allowed)} or host)."
            )
        return value.rstrip("/")

    def principals(self, name: str, why: str) -> tuple[str, ...]:
        value = self.required(name, why)
        items = tuple(item.strip() for item in value.split(",") if item.strip())
        bad = [item for item in items if not _SLACK_PRINCIPAL.match(item)]
        if value and not items:
            self.problems.append(f"{name} lists nobody: {why}.")
        if bad:
            self.problems.append(
                f"{name} must list Slack user ids (U…, W…) or user group ids (S…); "
                f"not ids: {', '.join(bad)}."
            )
        return items

    def app(self, prefix: str, what: str) -> AppCredentials:
        client_id = self.required(
            f"{prefix}_CLIENT_ID", f"the application (client) id of the {what}"
        )
        if client_id:
            try:
                uuid.UUID(client_id)
            except ValueError:
                self.problems.append(f"{prefix}_CLIENT_ID must be a GUID (the application id).")
        secret = self.raw(f"{prefix}_CLIENT_SECRET")
        certificate = self.raw(f"{prefix}_CLIENT_CERTIFICATE")
        if secret and certificate:
            self.problems.append(
                f"{prefix}_CLIENT_SECRET and {prefix}_CLIENT_CERTIFICATE are both set: keep one."
            )
        elif not secret and not certificate:
            self.problems.append(
                f"{prefix}_CLIENT_SECRET or {prefix}_CLIENT_CERTIFICATE is missing: the {what} "
                "needs a credential."
            )
        path: Path | None = None
        if certificate:
            path = Path(certificate)
            if not path.is_file():
                self.problems.append(
                    f"{prefix}_CLIENT_CERTIFICATE names {certificate}: not a readable file."
                )
            elif "PRIVATE KEY" not in path.read_text(errors="replace"):
                self.problems.append(
                    f"{prefix}_CLIENT_CERTIFICATE must be a PEM file holding the private key and "
                    "the certificate."
                )
        return AppCredentials(
            client_id=client_id,
            secret=Secret(secret) if secret else None,
            certificate_path=path,
        )


def _is_domain(value: str) -> bool:
    labels = value.split(".")
    return len(value) <= 253 and all(_DNS_LABEL.match(label) for label in labels)


def _check_smart_host(value: str) -> str | None:
    # New-OutboundConnector -SmartHosts: "FQDN of a smart host server, a mail exchange (MX)
    # record, or an address (A) record", an IP address, or a CIDR range.
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        if _is_domain(value) and "." in value:
            return None
        return (
            "must be the smart host's FQDN (such as relay.example.net), an IP address or a CIDR "
            "range (New-OutboundConnector -SmartHosts)."
        )
    return None


def _check_certificate_name(value: str) -> str | None:
    # New-InboundConnector -TlsSenderCertificateName: "A valid value is an SMTP domain. Wildcards
    # are supported to indicate a domain and all subdomains (for example, *.contoso.com), but you
    # can't embed the wildcard character (for example, domain.*.contoso.com is not valid)."
    domain = value[2:] if value.startswith("*.") else value
    if "*" in domain:
        return (
            "has an embedded wildcard: Exchange accepts a wildcard only as the first label "
            "(*.contoso.com), never inside a name (domain.*.contoso.com)."
        )
    if not _is_domain(domain):
        return "must be an SMTP domain such as relay.example.net or *.relay.example.net."
    return None


def _check_header(value: str) -> str | None:
    if _HEADER_NAME.match(value):
        return None
    return (
        "must be a mail header field name (printable ASCII without spaces or colons, such as "
        "X-Scanned)."
    )


def _check_prefix(value: str) -> str | None:
    longest = NAME_LIMIT - len(LONGEST_NAME_SUFFIX)
    if len(value) < MIN_PREFIX_LENGTH:
        return (
            f"must be at least {MIN_PREFIX_LENGTH} characters: every object whose name starts "
            "with it is treated as provisioning's own and may be changed or replaced."
        )
    if len(value) > longest:
        return (
            f"must be at most {longest} characters: Exchange names are at most {NAME_LIMIT} "
            f"characters and the longest name is the prefix +{LONGEST_NAME_SUFFIX!r}."
        )
    if "*" in value or "'" in value or '"' in value:
        return "must not contain *, ' or \" (it is matched in Exchange name filters)."
    return None


def _check_redis_url(value: str) -> str | None:
    if urlsplit(value).scheme in ("redis", "rediss", "unix"):
        return None
    return "must start with redis://, rediss:// or unix://."


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class _RedisTopology:
    cluster: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = None


def _sentinel_address(item: str) -> tuple[str, int] | None:
    host, _, port = item.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
    if host and port.isdigit() and 0 < int(port) < 65536 and " " not in host:
        return host, int(port)
    return None


def _redis_topology(reader: _Reader, redis_url: str) -> _RedisTopology:
    """REDIS_CLUSTER, or REDIS_SENTINELS + REDIS_SENTINEL_MASTER (+ REDIS_SENTINEL_PASSWORD)."""
    cluster_value = (reader.raw("REDIS_CLUSTER") or "0").lower()
    cluster = cluster_value in _TRUE
    if cluster_value not in _TRUE + _FALSE:
        reader.problems.append("REDIS_CLUSTER must be 1 (Redis Cluster) or 0 (default).")
    listed = reader.raw("REDIS_SENTINELS")
    master = reader.raw("REDIS_SENTINEL_MASTER")
    password = reader.raw("REDIS_SENTINEL_PASSWORD")
    sentinels: list[tuple[str, int]] = []
    if listed:
        items = [item.strip() for item in listed.split(",") if item.strip()]
        bad = [item for item in items if _sentinel_address(item) is None]
        if bad:
            reader.problems.append(
                f"REDIS_SENTINELS must list sentinels as host:port, comma-separated; not "
                f"host:port: {', '.join(bad)}."
            )
        sentinels = [address for item in items if (address := _sentinel_address(item))]
        if not items:
            reader.problems.append("REDIS_SENTINELS lists no sentinel.")
        if master is None:
            reader.problems.append(
                "REDIS_SENTINEL_MASTER is missing: the name under which the sentinels watch the "
                "master (their `sentinel monitor <name> …`)."
            )
    else:
        for name, value in (
            ("REDIS_SENTINEL_MASTER", master),
            ("REDIS_SENTINEL_PASSWORD", password),
        ):
            if value is not None:
                reader.problems.append(
                    f"{name} is set but REDIS_SENTINELS is not: list the sentinels."
                )
    if cluster and listed:
        reader.problems.append(
            "REDIS_CLUSTER and REDIS_SENTINELS are both set: a deployment is a Redis Cluster or "
            "a master watched by sentinels; keep one."
        )
    parts = urlsplit(redis_url)
    if (cluster or listed) and parts.scheme == "unix":
        topology = "REDIS_CLUSTER" if cluster else "REDIS_SENTINELS"
        reader.problems.append(
            f"REDIS_URL is a unix:// socket, but {topology} "
            "needs TCP: use redis:// or rediss:// (with Sentinel, only its scheme, credentials and "
            "database are used)."
        )
    if cluster and parts.path.strip("/") not in ("", "0"):
        reader.problems.append(
            "REDIS_URL names a database other than 0: Redis Cluster has database 0 only."
        )
    return _RedisTopology(
        cluster=cluster,
        sentinels=tuple(sentinels),
        sentinel_master=master if listed else None,
        sentinel_password=password if listed else None,
    )


def _ip_ranges(reader: _Reader) -> tuple[str, ...]:
    value = reader.required("INLINE_IP_RANGES", "the IPs/CIDRs the protection service sends from")
    ranges: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            reader.problems.append(f"INLINE_IP_RANGES holds {item!r}, which is not an IP or CIDR.")
            continue
        if network.version != 4:
            reader.problems.append(
                f"INLINE_IP_RANGES holds the IPv6 range {item}: the IP Allow List and the "
                "connectors' address settings take IPv4 only (\"IPv6 ranges are not "
                "supported\"); list the service's IPv4 sending ranges."
            )
            continue
        if str(network) not in ranges:
            ranges.append(str(network))
    if value and not ranges and not reader.problems:
        reader.problems.append("INLINE_IP_RANGES lists no address.")
    entries = split_ranges(tuple(ranges), ALLOW_LIST_MIN_PREFIX)
    if len(entries) > ALLOW_LIST_LIMIT:
        reader.problems.append(
            f"INLINE_IP_RANGES splits into {len(entries)} /24 entries: the IP Allow List takes "
            f"/24 to /32 and holds at most {ALLOW_LIST_LIMIT} entries."
        )
    return tuple(ranges)


def _metrics_token(reader: _Reader) -> Secret | None:
    value = reader.raw("METRICS_TOKEN")
    if value is None:
        return None
    if len(value) < MIN_METRICS_TOKEN_LENGTH or not _TOKEN.match(value):
        reader.problems.append(
            f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} printable characters "
            "without spaces (for example the output of `openssl rand -hex 32`)."
        )
        return None
    return Secret(value)


def _port(reader: _Reader) -> int:
    value = reader.raw("PORT") or "3000"
    if value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    reader.problems.append("PORT must be a TCP port number (1-65535).")
    return 0


def _positive_int(reader: _Reader, name: str, default: int) -> int:
    value = reader.raw(name)
    if value is None:
        return default
    if value.isdigit() and int(value) > 0:
        return int(value)
    reader.problems.append(f"{name} must be a positive whole number.")
    return default


def load_settings(environ: Mapping[str, str], mode: Mode = Mode.HTTP) -> Settings:
    """Build ``Settings`` from ``environ`` or raise ``ConfigError`` listing every problem."""
    read = _Reader(environ)
    bot_token = read.required("SLACK_BOT_TOKEN", "the bot token (xoxb-…) from the Slack app")
    read.checked(
        "SLACK_BOT_TOKEN",
        bot_token,
        lambda v: None if v.startswith("xoxb-") else "must be a bot token starting with xoxb-.",
    )
    signing_secret = read.raw("SLACK_SIGNING_SECRET")
    app_token = read.raw("SLACK_APP_TOKEN")
    if mode is Mode.HTTP and signing_secret is None:
        read.problems.append(
            "SLACK_SIGNING_SECRET is missing: HTTP mode verifies every request with it."
        )
    if mode is Mode.SOCKET:
        if app_token is None:
            read.problems.append(
                "SLACK_APP_TOKEN is missing: Socket Mode needs an app-level token (xapp-…)."
            )
        elif not app_token.startswith("xapp-"):
            read.problems.append("SLACK_APP_TOKEN must be an app-level token starting with xapp-.")
    redis_url = read.raw("REDIS_URL") or "redis://localhost:6379/0"
    read.checked("REDIS_URL", redis_url, _check_redis_url)
    topology = _redis_topology(read, redis_url)
    idle_hours = _positive_int(read, "SESSION_IDLE_HOURS", 7 * 24)
    retention_days = _positive_int(read, "AUDIT_RETENTION_DAYS", 90)
    notify = read.raw("NOTIFY_CHANNEL")
    if notify and not _CHANNEL_ID.match(notify):
        read.problems.append("NOTIFY_CHANNEL must be a channel id such as C0123ABCD.")
    inline = InlineService(
        name_prefix=read.checked(
            "INLINE_NAME_PREFIX", read.raw("INLINE_NAME_PREFIX") or "TMCAS Inline", _check_prefix
        ),
        inbound_smart_host=read.checked(
            "INLINE_INBOUND_SMART_HOST",
            read.required(
                "INLINE_INBOUND_SMART_HOST", "where Exchange sends inbound mail for scanning"
            ),
            _check_smart_host,
        ),
        outbound_smart_host=read.checked(
            "INLINE_OUTBOUND_SMART_HOST",
            read.required(
                "INLINE_OUTBOUND_SMART_HOST", "where Exchange sends outbound mail for scanning"
            ),
            _check_smart_host,
        ),
        ip_ranges=_ip_ranges(read),
        tls_certificate_name=read.checked(
            "INLINE_TLS_CERTIFICATE_NAME",
            read.required(
                "INLINE_TLS_CERTIFICATE_NAME",
                "the certificate name the service presents when it returns mail",
            ),
            _check_certificate_name,
        ),
        scanned_header=read.checked(
            "INLINE_SCANNED_HEADER",
            read.required("INLINE_SCANNED_HEADER", "the header the service stamps on scanned mail"),
            _check_header,
        ),
    )
    settings = Settings(
        slack_bot_token=Secret(bot_token),
        slack_signing_secret=Secret(signing_secret) if signing_secret else None,
        slack_app_token=Secret(app_token) if app_token else None,
        slack_api_url=read.url("SLACK_API_URL", "https://slack.com/api/", "the Slack Web API")
        + "/",
        redis_url=Secret(redis_url),
        public_url=read.url(
            "PUBLIC_URL", None, "Microsoft redirects admins to {PUBLIC_URL}/microsoft/callback"
        ),
        host=read.raw("HOST") or "127.0.0.1",
        port=_port(read),
        admins=read.principals(
            "PROVISION_ADMINS", "somebody must be allowed to start provisioning"
        ),
        approvers=read.principals(
            "PROVISION_APPROVERS", "somebody must acknowledge the privileged role assignment"
        ),
        notify_channel=notify,
        mailflow_app=read.app("MAILFLOW", "mail-flow app"),
        dirsync_app=read.app("DIRSYNC", "directory-sync app"),
        microsoft_login_url=read.url(
            "MICROSOFT_LOGIN_URL", "https://login.microsoftonline.com", "", https_only=True
        ),
        microsoft_graph_url=read.url("MICROSOFT_GRAPH_URL", "https://graph.microsoft.com", ""),
        microsoft_exchange_url=read.url(
            "MICROSOFT_EXCHANGE_URL", "https://outlook.office365.com", ""
        ),
        inline=inline,
        session_idle_seconds=idle_hours * 3600,
        role_request_remind_seconds=_positive_int(read, "ROLE_REQUEST_REMIND_HOURS", 4) * 3600,
        role_request_expire_seconds=_positive_int(read, "ROLE_REQUEST_EXPIRE_HOURS", 24) * 3600,
        audit_retention_seconds=retention_days * 24 * 3600,
        metrics_token=_metrics_token(read),
        redis_cluster=topology.cluster,
        redis_sentinels=topology.sentinels,
        redis_sentinel_master=topology.sentinel_master,
        redis_sentinel_password=(
            Secret(topology.sentinel_password) if topology.sentinel_password else None
        ),
    )
    if read.problems:
        raise ConfigError(read.problems)
    return settings


def sealing_key_material(settings: Settings) -> bytes:
    """Key material every replica holds and nobody else: the directory-sync app's credential."""
    credential = settings.dirsync_app
    if credential.secret is not None:
        return credential.secret.reveal().encode()
    assert credential.certificate_path is not None  # load_settings guarantees one credential
    return credential.certificate_path.read_bytes()
