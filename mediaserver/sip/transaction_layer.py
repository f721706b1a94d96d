"""The SIP transaction layer (RFC 3261 section 17): matching messages to
transactions, creating them, and Via handling, sans-IO.

`TransactionLayer` is what the UA core talks to: `receive` a message, `send` a
request or a response, `tick` when `next_deadline` comes due; it returns the
outputs of `mediaserver.sip.transaction`'s state machines in order.
`Retransmitter` helps a TU that must resend a 2xx until it is ACKed.
"""

from __future__ import annotations

import heapq
import ipaddress

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.headers import Via, split_list
from mediaserver.sip.message import Headers, Message, Request, Response
from mediaserver.sip.transaction import (
    DEFAULT_SIP_PORT,
    DEFAULT_TIMERS,
    MAGIC_COOKIE,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Output,
    RequestReceived,
    ServerTransaction,
    Target,
    TimerQueue,
    Timers,
    Transaction,
    TransactionError,
    TransactionKey,
    TransactionTerminated,
)

__all__ = ["Retransmitter", "TransactionLayer"]


# ---------------------------------------------------------------- Via handling


def _bare_host(host: str) -> str:
    """The host without IPv6 brackets."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _same_address(a: str, b: str) -> bool:
    a, b = _bare_host(a).lower(), _bare_host(b).lower()
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b  # at least one is a host name: a name never equals the source IP


def _replace_top_via(headers: Headers, value: str) -> None:
    items = list(headers)
    for i, (name, text) in enumerate(items):
        if name == "Via":
            items[i] = (name, ", ".join([value, *split_list(text)[1:]]))
            break
    # Headers has no positional setter: refill the same object (so any other
    # holder of it sees the change) in the original field order.
    for name in {name for name, _ in items}:
        headers.remove(name)
    for name, text in items:
        headers.add(name, text)


def _stamp_via(request: Request, source: Target) -> Via:
    """Add received/rport to the top Via (RFC 3261 section 18.2.1, RFC 3581 section 4).

    Raises:
        SipParseError, IndexError: the top Via is missing or malformed.
    """
    via = request.top_via
    params = dict(via.params)
    if "rport" in params and not params["rport"]:
        params["rport"] = str(source.port)
        # RFC 3581 wants received here even when it equals sent-by.
        params["received"] = _bare_host(source.host)
    elif not _same_address(via.host, source.host):
        params["received"] = _bare_host(source.host)
    else:
        return via
    stamped = Via(transport=via.transport, host=via.host, port=via.port, params=params)
    _replace_top_via(request.headers, str(stamped))
    return stamped


def _response_target(via: Via, source: Target) -> Target:
    """Where responses go (RFC 3261 section 18.2.2 with RFC 3581 section 4)."""
    if source.reliable:
        return source  # back on the connection the request came in on
    port = via.port if via.port is not None else DEFAULT_SIP_PORT
    maddr = via.params.get("maddr")
    if maddr:
        return Target(source.transport, _bare_host(maddr), port)
    rport = via.params.get("rport")
    if rport and rport.isdigit() and 0 < int(rport) <= 65535:
        host = via.params.get("received") or source.host
        return Target(source.transport, _bare_host(host), int(rport))
    received = via.params.get("received")
    if received:
        return Target(source.transport, _bare_host(received), port)
    return Target(source.transport, _bare_host(via.host), port)


def _via_identity(via: Via) -> str:
    """The top Via as RFC 2543 matching compares it: without what we stamped on it."""
    params = {k: v for k, v in via.params.items() if k != "received"}
    if "rport" in params:
        params["rport"] = None
    return str(Via(transport=via.transport, host=via.host.lower(), port=via.port, params=params))


def _is_rfc3261(via: Via) -> bool:
    return via.branch is not None and via.branch.startswith(MAGIC_COOKIE)


def _server_key(request: Request, via: Via, method: str, to_tag: str | None) -> TransactionKey:
    """The RFC 3261 section 17.2.3 key of `request`, for a transaction of `method`.

    Raises:
        SipParseError: a header RFC 2543 matching needs cannot be parsed.
    """
    if _is_rfc3261(via):
        return ("3261", via.branch, via.host.lower(), via.port, method)
    # RFC 2543 peers have no transaction id: match on the dialog and request ids.
    return (
        "2543",
        request.uri,
        to_tag,
        request.from_.tag,
        request.call_id,
        request.cseq.seq,
        _via_identity(via),
        method,
    )


def _to_tag(message: Message) -> str | None:
    try:
        return message.to.tag
    except SipParseError:
        return None


# ---------------------------------------------------------------- the layer


class TransactionLayer:
    """All live transactions, their matching tables and their timers.

    Every method returns the outputs to act on, in order. Methods that take a
    message from the network never raise on odd input: they drop it and return
    []. Methods called by the TU raise `TransactionError` when misused.
    """

    def __init__(self, timers: Timers = DEFAULT_TIMERS) -> None:
        self.timers = timers
        self._queue = TimerQueue()
        self._servers: dict[TransactionKey, ServerTransaction] = {}
        self._clients: dict[TransactionKey, ClientTransaction] = {}

    def __len__(self) -> int:
        return len(self._servers) + len(self._clients)

    # -- from the network ------------------------------------------------------

    def receive(self, message: Message, source: Target, now: float) -> list[Output]:
        """Handle a message from the transport.

        Requests get received/rport stamped on their top Via, then either match
        a server transaction (a retransmission: absorbed, perhaps re-answered) or
        start one and go to the TU. Responses go to their client transaction, or
        are dropped when they match none (strays; the caller may log them).

        Args:
            message: the parsed message.
            source: where it came from.
            now: the current time.

        Returns:
            The outputs, in order; [] for a dropped message.
        """
        if isinstance(message, Request):
            return self._receive_request(message, source, now)
        if isinstance(message, Response):
            return self._receive_response(message, now)
        return []

    def _receive_request(self, request: Request, source: Target, now: float) -> list[Output]:
        try:
            via = _stamp_via(request, source)
            to_tag = request.to.tag
            if request.method == "ACK":
                ack_tx = self._match_ack(request, via, to_tag)
            else:
                key = _server_key(request, via, request.method, to_tag)
        except (SipParseError, IndexError):
            return []
        if request.method == "ACK":
            if ack_tx is None:
                return [RequestReceived(request, None, source)]
            out = ack_tx._on_ack(request, source, now)
            self._reap(ack_tx, out)
            return out
        tx = self._servers.get(key)
        if tx is not None:
            return tx._on_retransmission(now)
        target = _response_target(via, source)
        new: ServerTransaction
        if request.method == "INVITE":
            new = InviteServerTransaction(request, key, source, target, self.timers, self._queue)
        else:
            new = NonInviteServerTransaction(request, key, source, target, self.timers, self._queue)
        self._servers[key] = new
        return [RequestReceived(request, new, source)]

    def _match_ack(
        self, ack: Request, via: Via, to_tag: str | None
    ) -> InviteServerTransaction | None:
        if _is_rfc3261(via):
            tx = self._servers.get(_server_key(ack, via, "INVITE", to_tag))
            return tx if isinstance(tx, InviteServerTransaction) else None
        # RFC 2543: the ACK's To tag is the one of the response we sent, while
        # the INVITE had either no To tag (initial) or that same tag (re-INVITE).
        for invite_tag in dict.fromkeys((to_tag, None)):
            tx = self._servers.get(_server_key(ack, via, "INVITE", invite_tag))
            if (
                isinstance(tx, InviteServerTransaction)
                and tx.last_response is not None
                and _to_tag(tx.last_response) == to_tag
            ):
                return tx
        return None

    def _receive_response(self, response: Response, now: float) -> list[Output]:
        if not 100 <= response.status <= 699:
            return []
        try:
            branch = response.top_via.branch
            method = response.cseq.method
        except (SipParseError, IndexError):
            return []
        tx = self._clients.get((branch, method))
        if tx is None:
            return []
        out = tx._on_response(response, now)
        self._reap(tx, out)
        return out

    # -- from the TU -----------------------------------------------------------

    def send_response(self, tx: ServerTransaction, response: Response, now: float) -> list[Output]:
        """Send a response through a server transaction.

        Args:
            tx: the transaction from `RequestReceived`.
            response: the response (built with `Request.response`).
            now: the current time.

        Returns:
            The outputs: the `Send`, and `TransactionTerminated` when a reliable
            transport ends the transaction at once.

        Raises:
            TransactionError: the transaction's state does not allow this
                response (e.g. a second final, or anything once terminated).
        """
        if not 100 <= response.status <= 699:
            raise TransactionError(f"bad status {response.status}")
        out = tx._send_response(response, now)
        self._reap(tx, out)
        return out

    def send_request(
        self, request: Request, target: Target, now: float
    ) -> tuple[ClientTransaction, list[Output]]:
        """Start a client transaction for `request` and send it.

        Args:
            request: a request whose top Via carries a fresh RFC 3261 branch
                (see `new_branch`). Not ACK: the ACK for a 2xx is sent by the TU
                without a transaction, the ACK for a non-2xx by the transaction.
            target: where to send it.
            now: the current time.

        Returns:
            The transaction and the outputs (the first `Send`).

        Raises:
            TransactionError: an ACK, a missing or non-RFC 3261 branch, a branch
                already in use, or a request whose Via/CSeq cannot be parsed.
        """
        if request.method == "ACK":
            raise TransactionError("ACK is not sent through a client transaction")
        try:
            via = request.top_via
            cseq = request.cseq
        except (SipParseError, IndexError) as exc:
            raise TransactionError(f"cannot parse the request's Via/CSeq: {exc}") from exc
        if cseq.method != request.method:
            raise TransactionError("CSeq method does not match the request method")
        if not _is_rfc3261(via):
            raise TransactionError("the top Via needs a branch starting with z9hG4bK")
        key: TransactionKey = (via.branch, request.method)
        if key in self._clients:
            raise TransactionError(f"branch {via.branch} is already in use")
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(request, key, target, self.timers, self._queue)
        else:
            tx = NonInviteClientTransaction(request, key, target, self.timers, self._queue)
        self._clients[key] = tx
        return tx, tx._start(now)

    def discard(self, tx: ServerTransaction) -> None:
        """Forget `tx` without answering it (a request dropped by policy: its
        retransmissions start a new transaction and are dropped again)."""
        if self._servers.get(tx.key) is tx:
            del self._servers[tx.key]

    def find_invite(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 section 9.2).

        Matching is that of section 17.2.3 with the method taken as INVITE.

        Args:
            cancel: the CANCEL, as delivered by `RequestReceived`.

        Returns:
            The live INVITE server transaction, or None.
        """
        try:
            key = _server_key(cancel, cancel.top_via, "INVITE", cancel.to.tag)
        except (SipParseError, IndexError):
            return None
        tx = self._servers.get(key)
        return tx if isinstance(tx, InviteServerTransaction) else None

    # -- time ------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do, or None when no timer runs."""
        heap = self._queue.heap
        while heap:
            _, token, timer, tx = heap[0]
            if tx._armed.get(timer) == token:
                return heap[0][0]
            heapq.heappop(heap)  # stale: stopped, re-armed or terminated
        return None

    def tick(self, now: float) -> list[Output]:
        """Fire every timer due at or before `now`, earliest first.

        Retransmission timers re-arm relative to `now`, so a late tick sends one
        retransmission, not a burst.
        """
        out: list[Output] = []
        heap = self._queue.heap
        while heap and heap[0][0] <= now:
            _, token, timer, tx = heapq.heappop(heap)
            if not tx._take_timer(timer, token):
                continue
            out += tx._on_timer(timer, now)
            self._reap(tx, out)
        return out

    def _reap(self, tx: Transaction, out: list[Output]) -> None:
        """Forget `tx` once it is terminated, reporting it once."""
        if not tx.terminated:
            return
        table: dict[TransactionKey, ServerTransaction] | dict[TransactionKey, ClientTransaction]
        table = self._servers if isinstance(tx, ServerTransaction) else self._clients
        if table.get(tx.key) is tx:
            del table[tx.key]
            out.append(TransactionTerminated(tx))


# ---------------------------------------------------------------- TU helper


class Retransmitter:
    """The schedule of a retransmission the TU owns, e.g. a 2xx to INVITE.

    RFC 3261 section 13.3.1.4: the UAS core re-sends its 2xx at T1, then at
    intervals doubling up to T2, until the ACK arrives, and gives up 64*T1 after
    the first send. Typical use, in the TU's timer handling::

        if r.expired(now):
            r.stop()            # no ACK: end the dialog (send BYE)
        elif r.due(now):
            resend_2xx()
    """

    def __init__(self, timers: Timers = DEFAULT_TIMERS) -> None:
        self._timers = timers
        self._interval = timers.t1
        self._next: float | None = None
        self._give_up = 0.0

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._next is not None

    def start(self, now: float) -> None:
        """Begin the schedule; `now` is when the message was first sent."""
        self._interval = self._timers.t1
        self._next = now + self._interval
        self._give_up = now + self._timers.timeout

    def next_deadline(self) -> float | None:
        """The next retransmission or the give-up time, whichever is first."""
        if self._next is None:
            return None
        return min(self._next, self._give_up)

    def due(self, now: float) -> bool:
        """True when a retransmission should be sent now; advances the schedule."""
        if self._next is None or now < self._next or now >= self._give_up:
            return False
        self._interval = min(2 * self._interval, self._timers.t2)
        self._next = now + self._interval
        return True

    def expired(self, now: float) -> bool:
        """True once 64*T1 has passed since `start` (and not stopped)."""
        return self._next is not None and now >= self._give_up

    def stop(self) -> None:
        """Stop the schedule (the ACK arrived, or the TU gave up)."""
        self._next = None
