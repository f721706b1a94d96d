"""The registrar (RFC 3261 section 10.3): bindings, refresh, removal, order, limits."""

from __future__ import annotations

from mediaserver.sip.message import Request, parse_message
from mediaserver.sip.registrar import Registrar
from mediaserver.sip.transaction import Target

PHONE = Target("udp", "127.0.0.1", 5070)


def register(
    *contacts: str, call_id: str = "reg1", cseq: int = 1, expires: str | None = None
) -> Request:
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r",
        "From: <sip:alice@127.0.0.1>;tag=f",
        "To: <sip:alice@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def contacts(result_headers: tuple[tuple[str, str], ...]) -> list[str]:
    return [v for k, v in result_headers if k == "Contact"]


def test_bind_refresh_query_and_expire() -> None:
    reg = Registrar(min_expires=60, max_expires=3600)
    result = reg.register(register("<sip:alice@10.0.0.5:5070>", expires="600"), "alice", PHONE, 0)
    assert result.status == 200
    assert contacts(result.headers) == ["<sip:alice@10.0.0.5:5070>;expires=600"]
    # A longer request is cut to max_expires; a contact's own expires wins over the header.
    result = reg.register(
        register("<sip:alice@10.0.0.5:5070>;expires=99999", cseq=2, expires="60"),
        "alice",
        PHONE,
        10,
    )
    assert contacts(result.headers) == ["<sip:alice@10.0.0.5:5070>;expires=3600"]
    # No Contact: a query, the bindings are listed and nothing changes.
    query = reg.register(register(cseq=3), "alice", PHONE, 20)
    assert query.status == 200 and len(contacts(query.headers)) == 1
    binding = reg.lookup("alice", 20)[0]
    assert binding.source == PHONE and binding.contact == "sip:alice@10.0.0.5:5070"
    assert reg.registered(20) == {"alice": [binding]}
    assert reg.lookup("alice", 3611) == [] and reg.registered(3611) == {}


def test_remove_one_and_wildcard() -> None:
    reg = Registrar()
    reg.register(register("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>;q=0.5"), "alice", PHONE, 0)
    assert [b.contact for b in reg.lookup("alice", 1)] == ["sip:a@10.0.0.1", "sip:a@10.0.0.2"]
    result = reg.register(register("<sip:a@10.0.0.1>;expires=0", cseq=2), "alice", PHONE, 1)
    assert contacts(result.headers) == ["<sip:a@10.0.0.2>;expires=3599"]
    bad = reg.register(register("*", cseq=3), "alice", PHONE, 2)
    assert bad.status == 400  # a wildcard needs Expires: 0
    gone = reg.register(register("*", cseq=4, expires="0"), "alice", PHONE, 2)
    assert gone.status == 200 and contacts(gone.headers) == [] and reg.lookup("alice", 2) == []


def test_too_brief_out_of_order_too_many_and_bad_values() -> None:
    reg = Registrar(min_expires=60, max_contacts=2)
    brief = reg.register(register("<sip:a@10.0.0.1>", expires="30"), "alice", PHONE, 0)
    assert brief.status == 423 and ("Min-Expires", "60") in brief.headers
    assert reg.register(register("<sip:a@10.0.0.1>", cseq=5), "alice", PHONE, 0).status == 200
    # The same Call-ID with a CSeq not above the last one arrived out of order.
    late = reg.register(register("<sip:a@10.0.0.1>;expires=0", cseq=5), "alice", PHONE, 1)
    assert late.status == 500 and len(reg.lookup("alice", 1)) == 1
    # Another Call-ID (another phone) is not ordered against it.
    assert reg.register(register("<sip:a@10.0.0.2>", call_id="x"), "alice", PHONE, 1).status == 200
    full = reg.register(register("<sip:a@10.0.0.3>", call_id="y"), "alice", PHONE, 1)
    assert full.status == 403 and len(reg.lookup("alice", 1)) == 2
    for bad in (
        register("<sip:a@10.0.0.4>;expires=-1", call_id="z"),
        register("<sip:a@10.0.0.4>;q=2", call_id="z"),
    ):
        assert reg.register(bad, "alice", PHONE, 1).status == 400
    assert len(reg.lookup("alice", 1)) == 2
