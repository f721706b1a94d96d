"""Tests for the sans-IO transaction layer (RFC 3261 section 17, RFC 6026).

Time is a plain float passed to every call; nothing sleeps.
"""

from __future__ import annotations

import re

import pytest

from mediaserver.sip.message import Request, Response, parse_message
from mediaserver.sip.transaction import (
    INVITE_CLIENT_TABLE,
    INVITE_SERVER_TABLE,
    NON_INVITE_CLIENT_TABLE,
    NON_INVITE_SERVER_TABLE,
    AckReceived,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Output,
    RequestReceived,
    ResponseReceived,
    Send,
    ServerTransaction,
    Target,
    Timers,
    Transaction,
    TransactionError,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    new_branch,
)
from mediaserver.sip.transaction_layer import Retransmitter, TransactionLayer

S = TransactionState

UDP_SRC = Target("udp", "10.0.0.1", 5060)
TCP_SRC = Target("tcp", "10.0.0.1", 40000, conn_id=7)
UDP_DST = Target("udp", "10.0.0.2", 5060)
TCP_DST = Target("tcp", "10.0.0.2", 5060, conn_id=3)

# T1 = 0.5: 64*T1 = 32 s.
G_SCHEDULE = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
A_SCHEDULE = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


# ---------------------------------------------------------------- builders


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc123",
    via_host: str = "10.0.0.1:5060",
    via_params: str = "",
    transport: str = "UDP",
    to_tag: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    uri: str = "sip:bob@10.0.0.2",
    extra: str = "",
) -> Request:
    branch_param = f";branch={branch}" if branch is not None else ""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    raw = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host}{branch_param}{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@example.com>;tag=fromtag1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@10.0.0.1\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw.encode())
    assert isinstance(msg, Request)
    return msg


def response_to(req: Request, status: int, to_tag: str | None = "totag1") -> Response:
    return req.response(status, to_tag=to_tag)


def reparse_response(resp: Response) -> Response:
    """A fresh copy, as if the peer had retransmitted it."""
    msg = parse_message(resp.encode())
    assert isinstance(msg, Response)
    return msg


def state_of(tx: Transaction) -> TransactionState:
    """The state, read through a call so mypy does not narrow it across steps."""
    return tx.state


def sends(out: list[Output]) -> list[Send]:
    return [o for o in out if isinstance(o, Send)]


def kinds(out: list[Output]) -> list[type]:
    return [type(o) for o in out]


def new_server_tx(
    layer: TransactionLayer, req: Request, source: Target = UDP_SRC, now: float = 0.0
) -> ServerTransaction:
    out = layer.receive(req, source, now)
    assert len(out) == 1 and isinstance(out[0], RequestReceived)
    tx = out[0].transaction
    assert tx is not None
    return tx


def new_invite_server_tx(
    layer: TransactionLayer, req: Request | None = None, source: Target = UDP_SRC
) -> InviteServerTransaction:
    tx = new_server_tx(layer, req or request(), source)
    assert isinstance(tx, InviteServerTransaction)
    return tx


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Output]]:
    """Tick at each deadline up to `end`; every output with its time."""
    seen: list[tuple[float, Output]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        seen += [(deadline, o) for o in layer.tick(deadline)]
    return seen


def client_request(method: str = "INVITE", branch: str = "z9hG4bKclient1", **kw: object) -> Request:
    return request(method, branch=branch, via_host="10.0.0.2:5060", **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- basics


def test_target_reliable() -> None:
    assert not UDP_SRC.reliable
    assert TCP_SRC.reliable
    assert Target("tls", "h", 5061).reliable
    assert Target("TCP", "h", 5060).reliable


def test_new_branch() -> None:
    a, b = new_branch(), new_branch()
    assert re.fullmatch(r"z9hG4bK[0-9a-f]{16}", a)
    assert a != b


def test_timers_defaults() -> None:
    timers = Timers()
    assert (timers.t1, timers.t2, timers.t4) == (0.5, 4.0, 5.0)
    assert timers.timeout == 32.0


@pytest.mark.parametrize(
    "table",
    [INVITE_SERVER_TABLE, NON_INVITE_SERVER_TABLE, INVITE_CLIENT_TABLE, NON_INVITE_CLIENT_TABLE],
)
def test_tables_are_closed(table: object) -> None:
    assert isinstance(table, dict)
    # every state reached is itself a row; Terminated is final
    for row in table.values():
        for nxt in row.values():
            assert nxt in table
    assert table[S.TERMINATED] == {}


def test_empty_layer() -> None:
    layer = TransactionLayer()
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer.tick(100.0) == []


# ---------------------------------------------------------------- INVITE server


def test_invite_creates_server_transaction() -> None:
    layer = TransactionLayer()
    req = request()
    out = layer.receive(req, UDP_SRC, 0.0)
    assert len(out) == 1
    ev = out[0]
    assert isinstance(ev, RequestReceived)
    assert ev.request is req and ev.source == UDP_SRC
    tx = ev.transaction
    assert isinstance(tx, InviteServerTransaction)
    assert state_of(tx) is S.PROCEEDING and not tx.terminated
    assert tx.request is req and tx.last_response is None
    assert tx.key[0] == "3261"
    assert len(layer) == 1
    # nothing automatic: the TU sends 100 Trying itself
    assert layer.next_deadline() is None


def test_invite_retransmission_in_proceeding_resends_latest_provisional() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    # before any provisional, a retransmission is simply absorbed
    assert layer.receive(request(), UDP_SRC, 0.1) == []
    trying = response_to(tx.request, 100)
    out = layer.send_response(tx, trying, 0.2)
    assert out == [Send(trying, UDP_SRC)]
    ringing = response_to(tx.request, 180)
    layer.send_response(tx, ringing, 0.3)
    out = layer.receive(request(), UDP_SRC, 0.4)
    assert out == [Send(ringing, UDP_SRC)]
    assert state_of(tx) is S.PROCEEDING and tx.last_response is ringing
    assert len(layer) == 1


def test_invite_2xx_accepted_absorbs_retransmissions_and_timer_l() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    ok = response_to(tx.request, 200)
    assert layer.send_response(tx, ok, 1.0) == [Send(ok, UDP_SRC)]
    assert state_of(tx) is S.ACCEPTED
    assert layer.next_deadline() == 33.0  # L = 64*T1
    # a retransmitted INVITE is absorbed: the 2xx is the TU's to retransmit
    assert layer.receive(request(), UDP_SRC, 1.5) == []
    # the TU's 2xx retransmissions go out through the transaction
    assert layer.send_response(tx, ok, 1.5) == [Send(ok, UDP_SRC)]
    # 1xx or a non-2xx final after a 2xx is a TU bug
    with pytest.raises(TransactionError):
        layer.send_response(tx, response_to(tx.request, 180), 2.0)
    with pytest.raises(TransactionError):
        layer.send_response(tx, response_to(tx.request, 486), 2.0)
    assert layer.tick(32.9) == []
    out = layer.tick(33.0)
    assert out == [TransactionTerminated(tx)]  # L is not a timeout
    assert tx.terminated and len(layer) == 0
    with pytest.raises(TransactionError):
        layer.send_response(tx, ok, 34.0)


def test_ack_for_2xx_in_accepted_is_delivered_as_ack_received() -> None:
    # An ACK reusing the INVITE's branch matches the transaction (RFC 6026 7.1).
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    layer.send_response(tx, response_to(tx.request, 200), 0.0)
    ack = request("ACK", to_tag="totag1")
    out = layer.receive(ack, UDP_SRC, 0.3)
    assert out == [AckReceived(ack, tx, UDP_SRC)]
    assert state_of(tx) is S.ACCEPTED
    # an RFC 3261 ACK for a 2xx has a new branch: no transaction, straight to the TU
    ack2 = request("ACK", branch="z9hG4bKack2", to_tag="totag1")
    out = layer.receive(ack2, UDP_SRC, 0.4)
    assert out == [RequestReceived(ack2, None, UDP_SRC)]


def test_invite_non2xx_timer_g_schedule_then_h() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    busy = response_to(tx.request, 486)
    assert layer.send_response(tx, busy, 0.0) == [Send(busy, UDP_SRC)]
    assert state_of(tx) is S.COMPLETED
    seen = run_until(layer, 100.0)
    resent = [t for t, o in seen if isinstance(o, Send)]
    assert resent == G_SCHEDULE  # T1, doubling, capped at T2 = 4
    assert all(o == Send(busy, UDP_SRC) for _, o in seen if isinstance(o, Send))
    tail = [(t, o) for t, o in seen if not isinstance(o, Send)]
    assert tail == [(32.0, TransactionTimeout(tx, "H")), (32.0, TransactionTerminated(tx))]
    assert tx.terminated and len(layer) == 0
    assert layer.next_deadline() is None


def test_invite_retransmission_in_completed_resends_final() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    busy = response_to(tx.request, 486)
    layer.send_response(tx, busy, 0.0)
    assert layer.receive(request(), UDP_SRC, 0.2) == [Send(busy, UDP_SRC)]
    with pytest.raises(TransactionError):
        layer.send_response(tx, response_to(tx.request, 500), 0.3)


def test_ack_in_completed_confirms_and_timer_i() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    busy = response_to(tx.request, 486)
    layer.send_response(tx, busy, 0.0)
    assert layer.tick(0.5) == [Send(busy, UDP_SRC)]  # one G retransmission
    ack = request("ACK", to_tag="totag1")
    assert layer.receive(ack, UDP_SRC, 1.0) == []  # absorbed, not for the TU
    assert state_of(tx) is S.CONFIRMED
    assert layer.next_deadline() == 6.0  # I = T4; G and H stopped
    # retransmitted ACK and INVITE are absorbed in Confirmed
    assert layer.receive(request("ACK", to_tag="totag1"), UDP_SRC, 2.0) == []
    assert layer.receive(request(), UDP_SRC, 2.0) == []
    assert layer.tick(5.9) == []
    assert layer.tick(6.0) == [TransactionTerminated(tx)]
    assert len(layer) == 0 and layer.next_deadline() is None


def test_invite_server_reliable_has_no_g_and_zero_i() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer, request(transport="TCP"), TCP_SRC)
    busy = response_to(tx.request, 486)
    assert layer.send_response(tx, busy, 0.0) == [Send(busy, TCP_SRC)]
    assert layer.next_deadline() == 32.0  # only H: no retransmission over TCP
    out = layer.receive(request("ACK", transport="TCP", to_tag="totag1"), TCP_SRC, 0.1)
    assert out == [TransactionTerminated(tx)]  # I = 0
    assert tx.terminated and len(layer) == 0
    assert layer.next_deadline() is None


def test_invite_server_reliable_timer_h() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer, request(transport="TCP"), TCP_SRC)
    layer.send_response(tx, response_to(tx.request, 603), 0.0)
    seen = run_until(layer, 100.0)
    assert seen == [(32.0, TransactionTimeout(tx, "H")), (32.0, TransactionTerminated(tx))]


def test_ack_in_proceeding_is_dropped() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    assert layer.receive(request("ACK"), UDP_SRC, 0.1) == []
    assert state_of(tx) is S.PROCEEDING


# ---------------------------------------------------------------- non-INVITE server


def test_non_invite_server_states_and_timer_j() -> None:
    layer = TransactionLayer()
    tx = new_server_tx(layer, request("OPTIONS"))
    assert isinstance(tx, NonInviteServerTransaction)
    assert state_of(tx) is S.TRYING
    assert layer.receive(request("OPTIONS"), UDP_SRC, 0.1) == []  # absorbed in Trying
    prov = response_to(tx.request, 100)
    layer.send_response(tx, prov, 0.2)
    assert state_of(tx) is S.PROCEEDING
    assert layer.receive(request("OPTIONS"), UDP_SRC, 0.3) == [Send(prov, UDP_SRC)]
    ok = response_to(tx.request, 200)
    assert layer.send_response(tx, ok, 1.0) == [Send(ok, UDP_SRC)]
    assert state_of(tx) is S.COMPLETED
    assert layer.receive(request("OPTIONS"), UDP_SRC, 2.0) == [Send(ok, UDP_SRC)]
    with pytest.raises(TransactionError):
        layer.send_response(tx, response_to(tx.request, 500), 2.0)
    assert layer.next_deadline() == 33.0  # J = 64*T1
    assert run_until(layer, 100.0) == [(33.0, TransactionTerminated(tx))]
    # after termination the same request is new again
    out = layer.receive(request("OPTIONS"), UDP_SRC, 40.0)
    assert kinds(out) == [RequestReceived]


def test_non_invite_server_final_from_trying() -> None:
    layer = TransactionLayer()
    tx = new_server_tx(layer, request("BYE", to_tag="x"))
    assert state_of(tx) is S.TRYING
    layer.send_response(tx, response_to(tx.request, 404), 0.0)
    assert state_of(tx) is S.COMPLETED


def test_non_invite_server_reliable_zero_j() -> None:
    layer = TransactionLayer()
    tx = new_server_tx(layer, request("OPTIONS", transport="TCP"), TCP_SRC)
    ok = response_to(tx.request, 200)
    assert layer.send_response(tx, ok, 0.0) == [Send(ok, TCP_SRC), TransactionTerminated(tx)]
    assert tx.terminated and len(layer) == 0 and layer.next_deadline() is None


def test_send_response_bad_status() -> None:
    layer = TransactionLayer()
    tx = new_server_tx(layer, request("OPTIONS"))
    bad = response_to(tx.request, 200)
    bad.status = 700
    with pytest.raises(TransactionError):
        layer.send_response(tx, bad, 0.0)


# ---------------------------------------------------------------- RFC 2543 matching


def test_rfc2543_invite_retransmission_and_ack() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer, request(branch=None))
    assert tx.key[0] == "2543"
    ringing = response_to(tx.request, 180)
    layer.send_response(tx, ringing, 0.0)
    assert layer.receive(request(branch=None), UDP_SRC, 0.5) == [Send(ringing, UDP_SRC)]
    # a different CSeq is a different transaction
    out = layer.receive(request(branch=None, cseq=2), UDP_SRC, 0.5)
    assert kinds(out) == [RequestReceived]
    assert len(layer) == 2
    busy = response_to(tx.request, 486, to_tag="srvtag")
    layer.send_response(tx, busy, 1.0)
    assert layer.receive(request(branch=None), UDP_SRC, 1.2) == [Send(busy, UDP_SRC)]
    # an ACK whose To tag is not the one we sent matches nothing
    stray = request("ACK", branch=None, to_tag="othertag")
    assert layer.receive(stray, UDP_SRC, 1.3) == [RequestReceived(stray, None, UDP_SRC)]
    assert state_of(tx) is S.COMPLETED
    # the ACK with the response's To tag matches the INVITE transaction
    assert layer.receive(request("ACK", branch=None, to_tag="srvtag"), UDP_SRC, 1.4) == []
    assert state_of(tx) is S.CONFIRMED


def test_rfc2543_old_style_branch_and_reinvite_ack() -> None:
    # A non-magic-cookie branch is just part of the Via; a re-INVITE carries the To tag.
    layer = TransactionLayer()
    reinvite = request(branch="oldbranch1", to_tag="dlg", cseq=5)
    tx = new_invite_server_tx(layer, reinvite)
    assert tx.key[0] == "2543"
    layer.send_response(tx, response_to(tx.request, 200, to_tag="dlg"), 0.0)
    ack = request("ACK", branch="oldbranch1", to_tag="dlg", cseq=5)
    assert layer.receive(ack, UDP_SRC, 0.1) == [AckReceived(ack, tx, UDP_SRC)]


def test_rfc2543_matching_ignores_stamped_received() -> None:
    # The peer's sent-by differs from its address; received is added to each copy.
    layer = TransactionLayer()
    src = Target("udp", "192.0.2.9", 5060)
    tx = new_invite_server_tx(layer, request(branch=None, via_host="pc.example.com"), src)
    layer.send_response(tx, response_to(tx.request, 180), 0.0)
    out = layer.receive(request(branch=None, via_host="pc.example.com"), src, 0.1)
    assert kinds(out) == [Send]


# ---------------------------------------------------------------- CANCEL


def test_cancel_is_its_own_transaction_and_finds_the_invite() -> None:
    layer = TransactionLayer()
    invite_tx = new_invite_server_tx(layer)
    cancel = request("CANCEL")
    out = layer.receive(cancel, UDP_SRC, 0.1)
    assert len(out) == 1 and isinstance(out[0], RequestReceived)
    cancel_tx = out[0].transaction
    assert isinstance(cancel_tx, NonInviteServerTransaction)
    assert cancel_tx is not invite_tx  # type: ignore[comparison-overlap]
    assert len(layer) == 2
    assert layer.find_invite(cancel) is invite_tx
    # the INVITE transaction is untouched: answering the CANCEL and the INVITE
    layer.send_response(cancel_tx, response_to(cancel, 200), 0.2)
    layer.send_response(invite_tx, response_to(invite_tx.request, 487), 0.2)
    assert state_of(invite_tx) is S.COMPLETED
    # a retransmitted CANCEL hits the CANCEL transaction only
    out = layer.receive(request("CANCEL"), UDP_SRC, 0.3)
    assert [s.message.cseq.method for s in sends(out)] == ["CANCEL"]


def test_find_invite_misses() -> None:
    layer = TransactionLayer()
    new_invite_server_tx(layer)
    assert layer.find_invite(request("CANCEL", branch="z9hG4bKother")) is None
    assert layer.find_invite(request("CANCEL", via_host="10.0.0.9")) is None
    broken = request("CANCEL")
    broken.headers.remove("Via")
    assert layer.find_invite(broken) is None


def test_find_invite_rfc2543() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer, request(branch=None))
    cancel = request("CANCEL", branch=None)
    layer.receive(cancel, UDP_SRC, 0.1)
    assert layer.find_invite(cancel) is tx
    assert layer.find_invite(request("CANCEL", branch=None, cseq=9)) is None


# ---------------------------------------------------------------- Via stamping / response target


def top_via_text(req: Request) -> str:
    return req.headers.get_list("Via")[0]


def test_received_added_when_host_differs() -> None:
    layer = TransactionLayer()
    req = request(via_host="pc.example.com:5070")
    src = Target("udp", "192.0.2.9", 5070)
    tx = new_server_tx(layer, req, src)
    via = req.top_via
    assert via.params["received"] == "192.0.2.9"
    assert "received=192.0.2.9" in top_via_text(req)
    assert tx.response_target == Target("udp", "192.0.2.9", 5070)


def test_received_uses_sent_by_port_or_5060() -> None:
    layer = TransactionLayer()
    req = request(via_host="pc.example.com")
    tx = new_server_tx(layer, req, Target("udp", "192.0.2.9", 33333))
    assert tx.response_target == Target("udp", "192.0.2.9", 5060)


def test_no_received_when_host_matches() -> None:
    layer = TransactionLayer()
    req = request(via_host="10.0.0.1:5080")
    before = top_via_text(req)
    tx = new_server_tx(layer, req, Target("udp", "10.0.0.1", 40000))
    assert top_via_text(req) == before
    assert tx.response_target == Target("udp", "10.0.0.1", 5080)


def test_plain_sent_by_default_port() -> None:
    layer = TransactionLayer()
    tx = new_server_tx(layer, request(via_host="10.0.0.1"), UDP_SRC)
    assert tx.response_target == Target("udp", "10.0.0.1", 5060)


def test_rport_filled_and_received_added_even_when_same_host() -> None:
    layer = TransactionLayer()
    req = request(via_host="10.0.0.1:5060", via_params=";rport")
    src = Target("udp", "10.0.0.1", 61000)
    tx = new_server_tx(layer, req, src)
    via = req.top_via
    assert via.params["rport"] == "61000"
    assert via.params["received"] == "10.0.0.1"
    assert tx.response_target == Target("udp", "10.0.0.1", 61000)


def test_rport_behind_nat() -> None:
    layer = TransactionLayer()
    req = request(via_host="192.168.1.10:5060", via_params=";rport")
    tx = new_server_tx(layer, req, Target("udp", "203.0.113.5", 17000))
    assert top_via_text(req) == (
        "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKabc123;rport=17000;received=203.0.113.5"
    )
    assert tx.response_target == Target("udp", "203.0.113.5", 17000)


def test_maddr_wins_for_unreliable() -> None:
    layer = TransactionLayer()
    req = request(via_host="10.0.0.1:5070", via_params=";maddr=239.255.255.1;ttl=1")
    tx = new_server_tx(layer, req, Target("udp", "10.0.0.1", 5070))
    assert tx.response_target == Target("udp", "239.255.255.1", 5070)


def test_reliable_responses_reuse_the_connection() -> None:
    layer = TransactionLayer()
    req = request(transport="TCP", via_host="pc.example.com:5060", via_params=";rport")
    tx = new_server_tx(layer, req, TCP_SRC)
    assert tx.response_target == TCP_SRC and tx.response_target.conn_id == 7
    # the Via is still stamped
    assert req.top_via.params["rport"] == "40000"
    assert req.top_via.params["received"] == "10.0.0.1"


def test_stamp_only_touches_the_top_via() -> None:
    layer = TransactionLayer()
    extra = "Via: SIP/2.0/UDP proxy2.example.com;branch=z9hG4bKp2\r\n"
    req = request(
        via_host="proxy1.example.com",
        via_params=", SIP/2.0/UDP proxy3.example.com;branch=z9hG4bKp3",
        extra=extra,
    )
    names_before = [name for name, _ in req.headers]
    new_server_tx(layer, req, Target("udp", "192.0.2.1", 5060))
    vias = req.headers.get_list("Via")
    assert len(vias) == 3
    assert vias[0].endswith(";received=192.0.2.1")
    assert vias[1:] == [
        "SIP/2.0/UDP proxy3.example.com;branch=z9hG4bKp3",
        "SIP/2.0/UDP proxy2.example.com;branch=z9hG4bKp2",
    ]
    # field order kept, the second Via line untouched
    assert [name for name, _ in req.headers] == names_before
    assert req.headers.get_all("Via")[1] == "SIP/2.0/UDP proxy2.example.com;branch=z9hG4bKp2"


def test_ipv6_source() -> None:
    layer = TransactionLayer()
    req = request(via_host="[2001:db8::1]:5060", via_params=";rport")
    tx = new_server_tx(layer, req, Target("udp", "2001:db8::1", 5062))
    assert tx.response_target == Target("udp", "2001:db8::1", 5062)
    req2 = request(via_host="[2001:DB8:0::1]:5060", branch="z9hG4bKv6b")
    before = top_via_text(req2)
    new_server_tx(layer, req2, Target("udp", "2001:db8::1", 5060))
    assert top_via_text(req2) == before  # same address, differently written


# ---------------------------------------------------------------- INVITE client


def test_invite_client_timer_a_schedule_then_b() -> None:
    layer = TransactionLayer()
    invite = client_request()
    tx, out = layer.send_request(invite, UDP_DST, 0.0)
    assert isinstance(tx, InviteClientTransaction)
    assert out == [Send(invite, UDP_DST)]
    assert state_of(tx) is S.CALLING and tx.key == ("z9hG4bKclient1", "INVITE")
    seen = run_until(layer, 100.0)
    assert [t for t, o in seen if isinstance(o, Send)] == A_SCHEDULE  # doubling, no T2 cap
    assert [(t, o) for t, o in seen if not isinstance(o, Send)] == [
        (32.0, TransactionTimeout(tx, "B")),
        (32.0, TransactionTerminated(tx)),
    ]
    assert len(layer) == 0


def test_invite_client_reliable_has_no_timer_a() -> None:
    layer = TransactionLayer()
    tx, _ = layer.send_request(client_request(transport="TCP"), TCP_DST, 0.0)
    assert layer.next_deadline() == 32.0
    assert run_until(layer, 100.0) == [
        (32.0, TransactionTimeout(tx, "B")),
        (32.0, TransactionTerminated(tx)),
    ]


def test_invite_client_provisional_then_2xx_accepted_and_timer_m() -> None:
    layer = TransactionLayer()
    invite = client_request()
    tx, _ = layer.send_request(invite, UDP_DST, 0.0)
    ringing = response_to(invite, 180)
    assert layer.receive(ringing, UDP_DST, 0.2) == [ResponseReceived(ringing, tx)]
    assert state_of(tx) is S.PROCEEDING
    # A and B are stopped: no more retransmissions, no timeout in Proceeding
    assert layer.next_deadline() is None
    assert layer.tick(100.0) == []
    ok = response_to(invite, 200)
    assert layer.receive(ok, UDP_DST, 101.0) == [ResponseReceived(ok, tx)]
    assert state_of(tx) is S.ACCEPTED and tx.last_response is ok
    assert layer.next_deadline() == 133.0  # M = 64*T1
    # retransmitted 2xx: delivered again so the TU re-sends its ACK
    ok2 = reparse_response(ok)
    assert layer.receive(ok2, UDP_DST, 102.0) == [ResponseReceived(ok2, tx)]
    # a 2xx from another fork too
    fork = response_to(invite, 200, to_tag="fork2")
    assert layer.receive(fork, UDP_DST, 102.5) == [ResponseReceived(fork, tx)]
    # late provisionals and non-2xx finals are dropped in Accepted
    assert layer.receive(response_to(invite, 183), UDP_DST, 103.0) == []
    assert layer.receive(response_to(invite, 486), UDP_DST, 103.0) == []
    assert layer.tick(133.0) == [TransactionTerminated(tx)]
    assert layer.receive(reparse_response(ok), UDP_DST, 134.0) == []  # stray now


def test_invite_client_2xx_straight_from_calling() -> None:
    layer = TransactionLayer()
    invite = client_request()
    tx, _ = layer.send_request(invite, UDP_DST, 0.0)
    layer.tick(0.5)  # one retransmission
    ok = response_to(invite, 200)
    assert layer.receive(ok, UDP_DST, 0.7) == [ResponseReceived(ok, tx)]
    assert layer.next_deadline() == 32.7


def test_invite_client_non2xx_builds_ack_and_timer_d() -> None:
    layer = TransactionLayer()
    invite = client_request(
        extra=(
            "Route: <sip:p1.example.com;lr>\r\n"
            "Route: <sip:p2.example.com;lr>\r\n"
            "Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower\r\n"
        ),
        cseq=314,
    )
    tx, _ = layer.send_request(invite, UDP_DST, 0.0)
    assert isinstance(tx, InviteClientTransaction)
    layer.receive(response_to(invite, 100, to_tag=None), UDP_DST, 0.1)
    busy = response_to(invite, 486, to_tag="busytag")
    out = layer.receive(busy, UDP_DST, 1.0)
    assert kinds(out) == [Send, ResponseReceived]
    assert out[1] == ResponseReceived(busy, tx)
    send = out[0]
    assert isinstance(send, Send) and send.target == UDP_DST
    ack = send.message
    assert isinstance(ack, Request) and ack is tx.ack
    assert state_of(tx) is S.COMPLETED
    # RFC 3261 17.1.1.3
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert ack.headers.get_all("Via") == ["SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKclient1"]
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.to.tag == "busytag"
    assert ack.headers.get("To") == busy.headers.get("To")
    assert str(ack.cseq) == "314 ACK"
    assert ack.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert ack.headers.get("Max-Forwards") == "70"
    assert ack.body == b""
    # it is a well-formed message
    reparsed = parse_message(ack.encode())
    assert isinstance(reparsed, Request) and reparsed.method == "ACK"
    # a retransmitted final re-sends the ACK and is not delivered again
    assert layer.receive(reparse_response(busy), UDP_DST, 2.0) == [Send(ack, UDP_DST)]
    assert layer.receive(response_to(invite, 200), UDP_DST, 2.0) == []
    # D = 32 s on UDP
    assert layer.next_deadline() == 33.0
    assert layer.tick(32.9) == []
    assert layer.tick(33.0) == [TransactionTerminated(tx)]


def test_invite_client_non2xx_reliable_zero_d() -> None:
    layer = TransactionLayer()
    invite = client_request(transport="TCP")
    tx, _ = layer.send_request(invite, TCP_DST, 0.0)
    busy = response_to(invite, 603)
    out = layer.receive(busy, TCP_DST, 1.0)
    assert kinds(out) == [Send, ResponseReceived, TransactionTerminated]
    assert tx.terminated and len(layer) == 0


def test_timer_d_covers_64t1_for_large_t1() -> None:
    layer = TransactionLayer(Timers(t1=1.0))
    invite = client_request()
    layer.send_request(invite, UDP_DST, 0.0)
    layer.receive(response_to(invite, 480), UDP_DST, 0.0)
    assert layer.next_deadline() == 64.0


# ---------------------------------------------------------------- non-INVITE client


def test_non_invite_client_timer_e_capped_then_f() -> None:
    layer = TransactionLayer()
    options = client_request("OPTIONS")
    tx, out = layer.send_request(options, UDP_DST, 0.0)
    assert isinstance(tx, NonInviteClientTransaction)
    assert out == [Send(options, UDP_DST)] and state_of(tx) is S.TRYING
    seen = run_until(layer, 100.0)
    assert [t for t, o in seen if isinstance(o, Send)] == G_SCHEDULE  # E caps at T2
    assert [(t, o) for t, o in seen if not isinstance(o, Send)] == [
        (32.0, TransactionTimeout(tx, "F")),
        (32.0, TransactionTerminated(tx)),
    ]


def test_non_invite_client_proceeding_retransmits_at_t2() -> None:
    layer = TransactionLayer()
    options = client_request("OPTIONS")
    tx, _ = layer.send_request(options, UDP_DST, 0.0)
    assert kinds(layer.tick(0.5)) == [Send]  # E: next at 1.5
    trying = response_to(options, 100, to_tag=None)
    assert layer.receive(trying, UDP_DST, 0.6) == [ResponseReceived(trying, tx)]
    assert state_of(tx) is S.PROCEEDING
    seen = run_until(layer, 100.0)
    times = [t for t, o in seen if isinstance(o, Send)]
    assert times[0] == 1.5  # the pending E still fires, then every T2
    assert times[1:] == [5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert [o for _, o in seen if not isinstance(o, Send)] == [
        TransactionTimeout(tx, "F"),
        TransactionTerminated(tx),
    ]


def test_non_invite_client_final_and_timer_k() -> None:
    layer = TransactionLayer()
    options = client_request("OPTIONS")
    tx, _ = layer.send_request(options, UDP_DST, 0.0)
    ok = response_to(options, 200)
    assert layer.receive(ok, UDP_DST, 1.0) == [ResponseReceived(ok, tx)]
    assert state_of(tx) is S.COMPLETED and tx.last_response is ok
    assert layer.next_deadline() == 6.0  # K = T4; E and F stopped
    assert layer.receive(reparse_response(ok), UDP_DST, 2.0) == []  # absorbed
    assert layer.receive(response_to(options, 180), UDP_DST, 2.0) == []
    assert layer.tick(6.0) == [TransactionTerminated(tx)]
    assert len(layer) == 0


def test_non_invite_client_reliable() -> None:
    layer = TransactionLayer()
    options = client_request("OPTIONS", transport="TCP")
    tx, _ = layer.send_request(options, TCP_DST, 0.0)
    assert layer.next_deadline() == 32.0  # F only, no E
    out = layer.receive(response_to(options, 404), TCP_DST, 1.0)
    assert kinds(out) == [ResponseReceived, TransactionTerminated]  # K = 0
    assert tx.terminated


# ---------------------------------------------------------------- client matching


def test_responses_match_on_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    invite = client_request()
    invite_tx, _ = layer.send_request(invite, UDP_DST, 0.0)
    # CANCEL reuses the INVITE's branch (RFC 3261 9.1): told apart by the CSeq method
    cancel = client_request("CANCEL", cseq_method="CANCEL")
    cancel_tx, _ = layer.send_request(cancel, UDP_DST, 0.1)
    assert isinstance(cancel_tx, ClientTransaction) and cancel_tx is not invite_tx
    assert len(layer) == 2
    ok = response_to(cancel, 200)
    assert layer.receive(ok, UDP_DST, 0.2) == [ResponseReceived(ok, cancel_tx)]
    terminated = response_to(invite, 487)
    out = layer.receive(terminated, UDP_DST, 0.3)
    assert ResponseReceived(terminated, invite_tx) in out
    # a response for an unknown branch is a stray
    other = response_to(request(branch="z9hG4bKnobody"), 200)
    assert layer.receive(other, UDP_DST, 0.4) == []


def test_send_request_misuse() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError):
        layer.send_request(client_request(branch="oldstyle"), UDP_DST, 0.0)
    no_branch = request(branch=None)
    with pytest.raises(TransactionError):
        layer.send_request(no_branch, UDP_DST, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(client_request("ACK"), UDP_DST, 0.0)
    layer.send_request(client_request(), UDP_DST, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(client_request(), UDP_DST, 0.0)  # branch in use
    mismatched = client_request("OPTIONS", branch="z9hG4bKm")
    mismatched.method = "INFO"
    with pytest.raises(TransactionError):
        layer.send_request(mismatched, UDP_DST, 0.0)
    assert len(layer) == 1


# ---------------------------------------------------------------- odd input


def test_odd_input_is_dropped() -> None:
    layer = TransactionLayer()
    invite = client_request()
    layer.send_request(invite, UDP_DST, 0.0)
    bad_cseq = response_to(invite, 200)
    bad_cseq.headers.set("CSeq", "not a cseq")
    assert layer.receive(bad_cseq, UDP_DST, 0.1) == []
    no_via = response_to(invite, 200)
    no_via.headers.remove("Via")
    assert layer.receive(no_via, UDP_DST, 0.1) == []
    bad_status = response_to(invite, 200)
    bad_status.status = 99
    assert layer.receive(bad_status, UDP_DST, 0.1) == []
    no_branch = response_to(invite, 200)
    no_branch.headers.set("Via", "SIP/2.0/UDP 10.0.0.2:5060")
    assert layer.receive(no_branch, UDP_DST, 0.1) == []

    req = request()
    req.headers.remove("Via")
    assert layer.receive(req, UDP_SRC, 0.1) == []
    req = request()
    req.headers.set("Via", "garbage")
    assert layer.receive(req, UDP_SRC, 0.1) == []
    req = request(branch=None)
    req.headers.set("CSeq", "x")  # RFC 2543 matching needs the CSeq
    assert layer.receive(req, UDP_SRC, 0.1) == []
    req = request("ACK")
    req.headers.set("To", "<<<")
    assert layer.receive(req, UDP_SRC, 0.1) == []
    assert layer.receive(Response(), UDP_SRC, 0.1) == []
    assert len(layer) == 1  # only the client INVITE


# ---------------------------------------------------------------- deadlines


def test_next_deadline_is_the_earliest_and_discards_stale_entries() -> None:
    layer = TransactionLayer()
    opt = client_request("OPTIONS", branch="z9hG4bKo1")
    opt_tx, _ = layer.send_request(opt, UDP_DST, 10.0)  # E at 10.5, F at 42
    server_tx = new_invite_server_tx(layer)
    layer.send_response(server_tx, response_to(server_tx.request, 486), 0.0)  # G at 0.5
    assert layer.next_deadline() == 0.5
    layer.receive(request("ACK", to_tag="totag1"), UDP_SRC, 0.2)  # G, H stopped; I at 5.2
    assert layer.next_deadline() == 5.2
    layer.receive(response_to(opt, 200), UDP_DST, 10.1)  # E, F stopped; K at 15.1
    assert layer.tick(5.19) == []
    assert layer.tick(5.2) == [TransactionTerminated(server_tx)]
    assert layer.next_deadline() == 15.1
    assert layer.tick(15.1) == [TransactionTerminated(opt_tx)]
    assert layer.next_deadline() is None
    assert len(layer) == 0


def test_late_tick_fires_everything_due_in_order_without_a_burst() -> None:
    layer = TransactionLayer()
    tx = new_invite_server_tx(layer)
    busy = response_to(tx.request, 486)
    layer.send_response(tx, busy, 0.0)
    opt = client_request("OPTIONS")
    opt_tx, _ = layer.send_request(opt, UDP_DST, 0.0)
    out = layer.tick(40.0)
    # one G and one E retransmission (re-armed from now), then H and F in order
    assert out == [
        Send(busy, UDP_SRC),
        Send(opt, UDP_DST),
        TransactionTimeout(tx, "H"),
        TransactionTerminated(tx),
        TransactionTimeout(opt_tx, "F"),
        TransactionTerminated(opt_tx),
    ]
    assert len(layer) == 0 and layer.next_deadline() is None


def test_custom_timers() -> None:
    layer = TransactionLayer(Timers(t1=0.1, t2=0.4, t4=1.0))
    tx, _ = layer.send_request(client_request("OPTIONS"), UDP_DST, 0.0)
    seen = run_until(layer, 100.0)
    times = [round(t, 6) for t, o in seen if isinstance(o, Send)]
    assert times[:5] == [0.1, 0.3, 0.7, 1.1, 1.5]
    assert [o for _, o in seen if not isinstance(o, Send)] == [
        TransactionTimeout(tx, "F"),
        TransactionTerminated(tx),
    ]
    assert seen[-1][0] == pytest.approx(6.4)


# ---------------------------------------------------------------- Retransmitter


def test_retransmitter_schedule() -> None:
    r = Retransmitter()
    assert r.next_deadline() is None
    assert not r.due(1.0) and not r.expired(100.0)
    r.start(0.0)
    assert r.running and r.next_deadline() == 0.5
    fired: list[float] = []
    while (deadline := r.next_deadline()) is not None:
        if r.expired(deadline):
            r.stop()
            break
        assert not r.due(deadline - 0.01)
        assert r.due(deadline)
        assert not r.due(deadline)  # advanced
        fired.append(deadline)
    assert fired == G_SCHEDULE  # T1 doubling, capped at T2
    assert r.next_deadline() is None and not r.expired(1000.0)


def test_retransmitter_expiry_and_stop() -> None:
    r = Retransmitter(Timers(t1=0.5, t2=4.0))
    r.start(10.0)
    assert r.next_deadline() == 10.5
    assert not r.expired(41.9)
    assert r.expired(42.0)
    assert not r.due(42.0)  # nothing after giving up
    r.start(50.0)  # restartable
    assert r.due(50.5) and r.next_deadline() == 51.5
    r.stop()
    assert not r.due(60.0) and not r.expired(200.0)
