"""INLINE_* values at the boundaries Microsoft documents: accepted exactly as Exchange accepts
them, split where a cmdlet takes narrower values, refused with the reason otherwise."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from tests.conftest import base_environment


def inline(**values: str) -> object:
    return load_settings(base_environment(**values)).inline


def problem(**values: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(base_environment(**values))
    (only,) = refused.value.problems
    return only


@pytest.mark.parametrize(
    ("value", "ranges", "allow_list"),
    [
        ("203.0.113.0/24", ("203.0.113.0/24",), ("203.0.113.0/24",)),
        ("203.0.113.7/32", ("203.0.113.7/32",), ("203.0.113.7",)),
        ("203.0.113.7", ("203.0.113.7/32",), ("203.0.113.7",)),
        ("203.0.113.128/25", ("203.0.113.128/25",), ("203.0.113.128/25",)),
        # Host bits set, as in Microsoft's own example "192.168.0.1/25": accepted, normalised.
        ("192.0.2.1/25", ("192.0.2.0/25",), ("192.0.2.0/25",)),
        ("198.18.0.0/23", ("198.18.0.0/23",), ("198.18.0.0/24", "198.18.1.0/24")),
        (
            " 203.0.113.0/24 , 203.0.113.0/24,198.51.100.7 ",
            ("203.0.113.0/24", "198.51.100.7/32"),
            ("203.0.113.0/24", "198.51.100.7"),
        ),
    ],
)
def test_ip_ranges_accepted_and_split(
    value: str, ranges: tuple[str, ...], allow_list: tuple[str, ...]
) -> None:
    service = load_settings(base_environment(INLINE_IP_RANGES=value)).inline
    assert service.ip_ranges == ranges
    assert service.allow_list_ranges == allow_list


def test_a_range_that_splits_into_1273_entries_is_accepted_but_not_more() -> None:
    # /14 = 1024 /24s: fits an empty list; pre-flight checks the room in the tenant's list.
    service = load_settings(base_environment(INLINE_IP_RANGES="10.0.0.0/14")).inline
    assert len(service.allow_list_ranges) == 1024
    reason = problem(INLINE_IP_RANGES="10.0.0.0/13")
    assert "2048 /24 entries" in reason
    assert "at most 1273" in reason


@pytest.mark.parametrize("value", ["2001:db8::/48", "2001:db8::1"])
def test_ipv6_is_refused_with_the_reason(value: str) -> None:
    reason = problem(INLINE_IP_RANGES=f"203.0.113.0/24,{value}")
    assert reason.startswith("INLINE_IP_RANGES")
    assert value in reason
    assert "IPv6 ranges are not supported" in reason


@pytest.mark.parametrize("value", ["not-an-ip", "203.0.113.0/33", "203.0.113.300"])
def test_malformed_ranges_are_refused(value: str) -> None:
    assert "not an IP or CIDR" in problem(INLINE_IP_RANGES=value)


@pytest.mark.parametrize(
    "value",
    [
        "relay.example.net",
        "*.relay.example.net",
        "*.example.net",
        "mail-1.relay.example.net",
        "contoso",  # an SMTP domain may be a single label
    ],
)
def test_certificate_names_exchange_accepts(value: str) -> None:
    service = load_settings(base_environment(INLINE_TLS_CERTIFICATE_NAME=value)).inline
    assert service.tls_certificate_name == value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("domain.*.contoso.com", "embedded wildcard"),
        ("relay*.example.net", "embedded wildcard"),
        ("*", "wildcard"),
        ("*.", "SMTP domain"),
        ("relay..example.net", "SMTP domain"),
        ("-relay.example.net", "SMTP domain"),
        ("relay example.net", "SMTP domain"),
    ],
)
def test_certificate_names_exchange_refuses(value: str, why: str) -> None:
    reason = problem(INLINE_TLS_CERTIFICATE_NAME=value)
    assert reason.startswith("INLINE_TLS_CERTIFICATE_NAME")
    assert why in reason


@pytest.mark.parametrize(
    "value", ["relay.example.net", "192.0.2.25", "192.0.2.0/28", "mx1.relay.example.net"]
)
def test_smart_hosts_exchange_accepts(value: str) -> None:
    service = load_settings(
        base_environment(INLINE_INBOUND_SMART_HOST=value, INLINE_OUTBOUND_SMART_HOST=value)
    ).inline
    assert service.inbound_smart_host == value


@pytest.mark.parametrize("value", ["relay", "https://relay.example.net", "*.relay.example.net"])
def test_smart_hosts_exchange_refuses(value: str) -> None:
    assert "FQDN" in problem(INLINE_INBOUND_SMART_HOST=value)


@pytest.mark.parametrize("value", ["X-Scanned", "X-Vendor.Verdict", "x_scan", "A"])
def test_header_names_accepted(value: str) -> None:
    assert load_settings(base_environment(INLINE_SCANNED_HEADER=value)).inline.scanned_header


@pytest.mark.parametrize("value", ["X Scanned", "X-Scanned:", "Ünïcode"])
def test_header_names_refused(value: str) -> None:
    assert "header field name" in problem(INLINE_SCANNED_HEADER=value)


@pytest.mark.parametrize(("value", "ok"), [("Inline", True), ("ABCDE", False), ("A" * 20, True)])
def test_name_prefix_is_at_least_six_characters(value: str, ok: bool) -> None:
    if ok:
        assert load_settings(base_environment(INLINE_NAME_PREFIX=value)).inline.name_prefix
    else:
        assert "at least 6 characters" in problem(INLINE_NAME_PREFIX=value)


def test_name_prefix_keeps_every_name_within_64_characters() -> None:
    reason = problem(INLINE_NAME_PREFIX="A" * 21)
    assert "at most 20 characters" in reason
    assert "64" in reason
