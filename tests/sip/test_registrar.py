"""The registrar (RFC 3261 section 10.3): bindings, refresh, removal, order, limits."""

from __future__ import annotations

from mediaserver.sip.message import Request, parse_message
from mediaserver.sip.registrar import Registrar
from mediaserver.sip.transaction import Target

PHONE = Target("udp", "127.0.0.1", 5070)


def register(
    *contacts: str,
    call_id: str = "reg1",
    cseq: int = 1,
    expires: str | None = None,
    extra: tuple[str, ...] = (),
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
        *extra,
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


PATH = "<sip:127.0.0.1:5060;lr;received=sip:198.51.100.7:40000>"


def test_path_is_kept_and_echoed_only_to_a_phone_that_supports_it() -> None:
    reg = Registrar()
    plain = reg.register(register("<sip:a@10.0.0.1>", extra=(f"Path: {PATH}",)), "alice", PHONE, 0)
    assert plain.status == 200 and not [v for k, v in plain.headers if k == "Path"]
    assert reg.lookup("alice", 1)[0].path == (PATH,)
    aware = reg.register(
        register("<sip:a@10.0.0.1>", cseq=2, extra=(f"Path: {PATH}", "Supported: path")),
        "alice",
        PHONE,
        1,
    )
    assert [v for k, v in aware.headers if k == "Path"] == [PATH]


def test_changes_are_heard_and_merges_keep_the_newest() -> None:
    heard: list[tuple[str, str, bool, float]] = []
    here = Registrar()
    here.listener = lambda user, contact, b, when: heard.append(
        (user, contact, b is not None, when)
    )
    here.register(register("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>"), "alice", PHONE, 5)
    here.register(register("<sip:a@10.0.0.2>;expires=0", cseq=2), "alice", PHONE, 6)
    assert heard == [
        ("alice", "sip:a@10.0.0.1", True, 5), ("alice", "sip:a@10.0.0.2", True, 5),
        ("alice", "sip:a@10.0.0.2", False, 6),
    ]  # fmt: skip

    # Another worker's registrar takes the same changes in any order: the newest wins.
    there = Registrar()
    there.listener = lambda *change: heard.append(("never",))  # type: ignore[arg-type]
    first, gone = here.lookup("alice", 7)[0], None
    removed_at = 6.0
    there.merge("alice", "sip:a@10.0.0.2", gone, removed_at)
    older = first.__class__(**{**first.__dict__, "contact": "sip:a@10.0.0.2", "updated": 5.0})
    there.merge("alice", "sip:a@10.0.0.2", older, 5.0)  # older than its removal: ignored
    there.merge("alice", first.contact, first, first.updated)
    assert [b.contact for b in there.lookup("alice", 7)] == ["sip:a@10.0.0.1"]
    assert there.known_source(PHONE.host, 7)
    stale = first.__class__(**{**first.__dict__, "expires_at": 1.0, "updated": 1.0})
    there.merge("alice", first.contact, stale, 1.0)  # older: the binding stays
    assert there.lookup("alice", 7)[0].expires_at == first.expires_at
    there.merge("alice", first.contact, None, 8.0)
    assert there.lookup("alice", 9) == [] and there.registered(9) == {}
    assert heard[-1] != ("never",)  # merges are not changes made here
