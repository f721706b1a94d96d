"""Trunks, sans-IO: called-number forms, routing, address matching, asserted identity."""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Mapping

import pytest

from mediaserver.sip.message import Request, parse_message
from mediaserver.sip.trunks import Trunk, TrunkTable, caller_identity, normalise_number


@pytest.mark.parametrize(
    ("raw", "country", "first"),
    [
        ("+15551230000", "", "+15551230000"),
        ("+1 (555) 123-0000", "", "+15551230000"),
        ("+1-555-123-0000;npdi", "", "+15551230000"),
        ("0015551230000", "", "+15551230000"),
        ("15551230000", "", "+15551230000"),
        ("5551230000", "1", "+15551230000"),
        ("0201234567", "44", "+44201234567"),
        ("00442012345678", "1", "+442012345678"),
    ],
)
def test_a_number_is_compared_in_e164(raw: str, country: str, first: str) -> None:
    assert normalise_number(raw, country)[0] == first


@pytest.mark.parametrize("raw", ["", "support", "+", "+1abc", "sip"])
def test_what_is_not_a_number_has_no_forms(raw: str) -> None:
    assert normalise_number(raw, "1") == []


def invite(ruri: str, to: str | None = None, extra: str = "") -> Request:
    lines = [
        f"INVITE {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1",
        "Max-Forwards: 70",
        "From: <sip:+15559870000@carrier.example>;tag=a",
        f"To: <{to or ruri}>",
        "Call-ID: t1",
        "CSeq: 1 INVITE",
        "Contact: <sip:192.0.2.10:5060>",
        *[line for line in extra.strip().split("\n") if line],
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


TRUNK = Trunk(
    "carrier",
    allow=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")),
    numbers={"+15551230000": "support", "+15551230001": "sales"},
    country_code="1",
)


@pytest.mark.parametrize(
    ("ruri", "to", "route"),
    [
        ("sip:+15551230000@mediaserver.example", None, "support"),
        ("sip:15551230001@mediaserver.example;user=phone", None, "sales"),
        ("sip:5551230000@mediaserver.example", None, "support"),
        ("tel:+1-555-123-0001", "sip:+15551230001@mediaserver.example", "sales"),
        # The DID in To only (a carrier that puts our host in the Request-URI).
        ("sip:mediaserver.example", "sip:+15551230000@mediaserver.example", "support"),
    ],
)
def test_a_trunks_invite_is_routed_by_the_called_number(
    ruri: str, to: str | None, route: str
) -> None:
    routed = TRUNK.route(invite(ruri, to))
    assert routed is not None and routed[0] == route
    assert routed[1].startswith("+1555123000")


def test_an_unknown_number_is_not_routed_unless_there_is_a_default() -> None:
    assert TRUNK.route(invite("sip:+15550000000@x.example")) is None
    catch_all = Trunk("c", TRUNK.allow, TRUNK.numbers, default_route="support", country_code="1")
    assert catch_all.route(invite("sip:+15550000000@x.example")) == ("support", "+15550000000")


def test_trunks_are_matched_by_source_address() -> None:
    other = Trunk("other", allow=(ipaddress.ip_network("198.51.100.7/32"),))
    table = TrunkTable([TRUNK, other])
    assert table.match("192.0.2.99") is TRUNK
    assert table.match("2001:db8::5") is TRUNK
    assert table.match("[2001:db8::5]") is TRUNK
    assert table.match("198.51.100.7") is other
    assert table.match("198.51.100.8") is None
    assert table.match("pbx.example") is None
    assert TrunkTable().match("192.0.2.99") is None
    assert table.routes() == {"support", "sales"}


def passport(claims: Mapping[str, object]) -> str:
    def b64(data: Mapping[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    header = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": "https://cert.example"}
    return f"{b64(header)}.{b64(claims)}.c2lnbmF0dXJl;info=<https://cert.example>;alg=ES256"


def test_the_networks_word_on_the_caller_is_read() -> None:
    claims = {"attest": "A", "orig": {"tn": "15559870000"}, "dest": {"tn": ["15551230000"]}}
    req = invite(
        "sip:+15551230000@x.example",
        extra=(
            '\nP-Asserted-Identity: "Alice" <sip:+15559870000@carrier.example;'
            "verstat=TN-Validation-Passed;user=phone>, <tel:+15559870000>"
            "\nRemote-Party-ID: <sip:+15559870000@carrier.example>;party=calling"
            f"\nIdentity: {passport(claims)}"
        ),
    )
    identity = caller_identity(req)
    assert identity["asserted"] == [
        "sip:+15559870000@carrier.example;verstat=TN-Validation-Passed;user=phone",
        "tel:+15559870000",
    ]
    assert identity["verstat"] == "TN-Validation-Passed"
    assert identity["remote_party_id"].startswith("<sip:+15559870000")
    assert identity["attestation"] == "A"
    assert identity["orig"] == "15559870000" and identity["dest"] == ["15551230000"]


@pytest.mark.parametrize("value", ["garbage", "a.b", "a.!!!.c", "a.bm90IGpzb24.c"])
def test_a_malformed_identity_header_is_recorded_as_such(value: str) -> None:
    req = invite("sip:+15551230000@x.example", extra=f"\nIdentity: {value}")
    assert caller_identity(req) == {"identity": "malformed"}
    assert caller_identity(invite("sip:+15551230000@x.example")) == {}
