"""DialRequest: what a request to place a call may hold; each bad field is named."""

from __future__ import annotations

from typing import Any

import pytest

from mediaserver.outbound import DialError, DialRequest


def test_a_full_request() -> None:
    request = DialRequest.from_json(
        {
            "to": "sip:bob@pbx.example.com;transport=tcp",
            "route": "remind",
            "caller_id": "+15550001111",
            "caller_name": "Clinic",
            "ring_timeout": 12,
            "variables": {"patient": "Sam", "slot": {"day": "Mon"}},
            "webhook": "https://hooks.example.com/status",
            "amd": "detect",
        },
        idempotency_key="abc-1",
    )
    assert request.kind == "uri" and request.ring_timeout == 12.0
    assert request.idempotency_key == "abc-1" and request.amd == "detect"
    assert request.variables["slot"] == {"day": "Mon"}


@pytest.mark.parametrize(
    ("to", "kind"),
    [
        ("sip:alice@127.0.0.1", "uri"),
        ("sips:alice@example.com:5061", "uri"),
        ("+1 (555) 123-0000", "number"),
        ("tel:+15551230000", "number"),
        ("00442071234567", "number"),
        ("alice", "user"),
        ("1001", "number"),  # a user registered by that name is still called as one
    ],
)
def test_what_to_names(to: str, kind: str) -> None:
    assert DialRequest.from_json({"to": to, "route": "r"}).kind == kind


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "JSON object"),
        ({"route": "r"}, "to: required"),
        ({"to": "alice"}, "route: required"),
        ({"to": "sip:@", "route": "r"}, "to: malformed"),
        ({"to": "tel:hello", "route": "r"}, "to: malformed tel"),
        ({"to": "bob smith", "route": "r"}, "to:"),
        ({"to": "", "route": "r"}, "to:"),
        ({"to": 5, "route": "r"}, "to:"),
        ({"to": "a", "route": ""}, "route:"),
        ({"to": "a", "route": "r", "caller_id": "<script>"}, "caller_id"),
        ({"to": "a", "route": "r", "caller_name": "x" * 65}, "caller_name"),
        ({"to": "a", "route": "r", "ring_timeout": 0}, "ring_timeout"),
        ({"to": "a", "route": "r", "ring_timeout": "10"}, "ring_timeout"),
        ({"to": "a", "route": "r", "ring_timeout": True}, "ring_timeout"),
        ({"to": "a", "route": "r", "ring_timeout": 301}, "ring_timeout"),
        ({"to": "a", "route": "r", "variables": [1]}, "variables"),
        ({"to": "a", "route": "r", "variables": {"call": 1}}, "variables: 'call'"),
        ({"to": "a", "route": "r", "variables": {"x": "y" * 20_000}}, "variables: at most"),
        ({"to": "a", "route": "r", "webhook": "ftp://x/y"}, "webhook"),
        ({"to": "a", "route": "r", "webhook": "http://"}, "webhook"),
        ({"to": "a", "route": "r", "amd": "maybe"}, "amd"),
        ({"to": "a", "route": "r", "idempotency_key": "a b"}, "idempotency_key"),
        ({"to": "a", "route": "r", "colour": "red"}, "unknown field: colour"),
    ],
)
def test_bad_fields_are_named(body: Any, field: str) -> None:
    with pytest.raises(DialError) as caught:
        DialRequest.from_json(body)
    assert caught.value.status == 422
    assert field in caught.value.reason, caught.value.reason


def test_the_fingerprint_ignores_the_key_only() -> None:
    a = DialRequest.from_json({"to": "alice", "route": "r", "idempotency_key": "k"})
    b = DialRequest.from_json({"to": "alice", "route": "r"}, idempotency_key="other")
    c = DialRequest.from_json({"to": "alice", "route": "r", "ring_timeout": 9})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
