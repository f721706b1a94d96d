"""SIP transactions (RFC 3261 section 17, as amended by RFC 6026), sans-IO.

The transaction layer sits between the transport (which turns bytes into
`Message` objects and back) and the transaction user (the UA core / dialog
layer). It owns request and response retransmission, the matching of
retransmissions to transactions, and the timers that end transactions.

Nothing here touches a socket, an event loop or the system clock. Every entry
point takes `now` (seconds from an injected clock) and returns an ordered list of
outputs; the caller performs them (`Send`) or hands them to the TU (the rest),
and calls `tick()` when `next_deadline()` comes due::

    layer = TransactionLayer()
    for out in layer.receive(message, source, now):
        ...                      # Send -> transport; RequestReceived -> TU; ...
    deadline = layer.next_deadline()   # sleep until then (or the next packet)
    outputs = layer.tick(clock())

Each transaction kind is a small state machine whose legal transitions are the
tables `INVITE_SERVER_TABLE`, `NON_INVITE_SERVER_TABLE`, `INVITE_CLIENT_TABLE`
and `NON_INVITE_CLIENT_TABLE` (in the style of h11's `_state.py`): the tables
decide *whether* an event is allowed and which state follows; the transaction
classes perform the side effects (sending, delivering, arming timers).

Zero-length timers (D, I, J and K on reliable transports) fire at once, inside
the call that armed them, rather than waiting for the next `tick()`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from mediaserver.sip.message import Message, Request, Response

#: Branch prefix of RFC 3261 transaction ids (section 8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"

#: Transports that deliver in order without loss: no retransmission timers, and
#: the "wait for stray retransmissions" timers (D, I, J, K) are zero.
_RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "sctp", "ws", "wss"})

#: Lower bound on timer D for unreliable transports (RFC 3261 section 17.1.1.2).
_TIMER_D_MIN = 32.0

DEFAULT_SIP_PORT = 5060


class TransactionError(Exception):
    """The TU asked for something the transaction cannot do.

    Raised only for programming errors in the caller (a response in a state that
    does not allow it, a request without an RFC 3261 branch...), never for
    anything received from the network: odd network input is dropped.
    """


def new_branch() -> str:
    """A fresh RFC 3261 branch value: the magic cookie plus 64 random bits, hex."""
    return MAGIC_COOKIE + secrets.token_hex(8)


@dataclass(frozen=True)
class Target:
    """Where a message goes.

    Attributes:
        transport: "udp", "tcp" or "tls" (lower case).
        host: IP address or host name (IPv6 without brackets).
        port: port number.
        conn_id: the connection (stream) or socket (UDP) a request arrived
            on; responses and in-dialog requests leave through it.
    """

    transport: str
    host: str
    port: int
    conn_id: int | None = None

    @property
    def reliable(self) -> bool:
        """True for stream transports (tcp, tls), where nothing is retransmitted."""
        return self.transport.lower() in _RELIABLE_TRANSPORTS


@dataclass(frozen=True)
class Timers:
    """RFC 3261 timer base values (section 17.1.1.1 and the table in appendix A).

    Attributes:
        t1: RTT estimate; first retransmission interval.
        t2: cap on the retransmission interval for non-INVITE requests and for
            INVITE responses.
        t4: how long a message may linger in the network.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """64*T1: the value of timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1


DEFAULT_TIMERS = Timers()


# --------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Send:
    """Put `message` on the wire towards `target`."""

    message: Message
    target: Target


@dataclass(frozen=True)
class RequestReceived:
    """A new request for the TU.

    `transaction` is None only for an ACK that matched no transaction: the ACK
    for a 2xx, which is the dialog layer's business (RFC 3261 section 17.2.3).
    """

    request: Request
    transaction: ServerTransaction | None
    source: Target


@dataclass(frozen=True)
class AckReceived:
    """An ACK for a 2xx that matched an INVITE server transaction in Accepted.

    The TU should stop retransmitting its 2xx (RFC 6026 section 7.1). An ACK for
    a 2xx from an RFC 3261 peer has its own branch and so usually arrives as
    `RequestReceived(transaction=None)` instead; the TU must handle both.
    """

    request: Request
    transaction: InviteServerTransaction
    source: Target


@dataclass(frozen=True)
class ResponseReceived:
    """A response for the TU, from the client transaction it belongs to."""

    response: Response
    transaction: ClientTransaction


@dataclass(frozen=True)
class TransactionTimeout:
    """A transaction gave up: timer "B" or "F" (no final response) or "H" (no ACK)."""

    transaction: Transaction
    timer: str


@dataclass(frozen=True)
class TransactionTerminated:
    """A transaction reached Terminated and was removed from the layer."""

    transaction: Transaction


Output: TypeAlias = (
    Send
    | RequestReceived
    | AckReceived
    | ResponseReceived
    | TransactionTimeout
    | TransactionTerminated
)

TransactionKey: TypeAlias = tuple[str | int | None, ...]


# ---------------------------------------------------------------- state tables


class TransactionState(enum.Enum):
    """Transaction states; each kind uses a subset (see the tables)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class TxEvent(enum.Enum):
    """What can happen to a transaction: input, TU action, or a timer firing."""

    REQUEST = "request retransmission received"
    ACK = "ACK received"
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_3XX_6XX = "TU sends 300-699"
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_3XX_6XX = "300-699 received"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


StateTable: TypeAlias = Mapping[TransactionState, Mapping[TxEvent, TransactionState]]

_S = TransactionState
_E = TxEvent

# An event missing from a state's row is not allowed there: from the network it
# is dropped, from the TU it raises TransactionError. Actions in the comments.

#: INVITE server transaction: RFC 3261 section 17.2.1 with RFC 6026 section 7.1.
INVITE_SERVER_TABLE: StateTable = {
    _S.PROCEEDING: {
        _E.REQUEST: _S.PROCEEDING,  # re-send the latest 1xx, if any
        _E.SEND_1XX: _S.PROCEEDING,  # send
        _E.SEND_2XX: _S.ACCEPTED,  # send; start L = 64*T1
        _E.SEND_3XX_6XX: _S.COMPLETED,  # send; start G = T1 (unreliable), H = 64*T1
    },
    _S.ACCEPTED: {
        _E.REQUEST: _S.ACCEPTED,  # absorb: the TU retransmits the 2xx itself
        _E.ACK: _S.ACCEPTED,  # deliver AckReceived
        _E.SEND_2XX: _S.ACCEPTED,  # send (the TU's 2xx retransmission)
        _E.TIMER_L: _S.TERMINATED,
    },
    _S.COMPLETED: {
        _E.REQUEST: _S.COMPLETED,  # re-send the final response
        _E.ACK: _S.CONFIRMED,  # stop G and H; start I = T4 (0 reliable)
        _E.TIMER_G: _S.COMPLETED,  # re-send the final; G = min(2G, T2)
        _E.TIMER_H: _S.TERMINATED,  # TransactionTimeout "H": the ACK never came
    },
    _S.CONFIRMED: {
        _E.REQUEST: _S.CONFIRMED,  # absorb
        _E.ACK: _S.CONFIRMED,  # absorb the retransmitted ACK
        _E.TIMER_I: _S.TERMINATED,
    },
    _S.TERMINATED: {},
}

#: Non-INVITE server transaction: RFC 3261 section 17.2.2.
NON_INVITE_SERVER_TABLE: StateTable = {
    _S.TRYING: {
        _E.REQUEST: _S.TRYING,  # absorb: nothing to re-send yet
        _E.SEND_1XX: _S.PROCEEDING,  # send
        _E.SEND_2XX: _S.COMPLETED,  # send; start J = 64*T1 (0 reliable)
        _E.SEND_3XX_6XX: _S.COMPLETED,  # likewise
    },
    _S.PROCEEDING: {
        _E.REQUEST: _S.PROCEEDING,  # re-send the latest 1xx
        _E.SEND_1XX: _S.PROCEEDING,  # send
        _E.SEND_2XX: _S.COMPLETED,  # send; start J
        _E.SEND_3XX_6XX: _S.COMPLETED,  # send; start J
    },
    _S.COMPLETED: {
        _E.REQUEST: _S.COMPLETED,  # re-send the final response
        _E.TIMER_J: _S.TERMINATED,
    },
    _S.TERMINATED: {},
}

#: INVITE client transaction: RFC 3261 section 17.1.1 with RFC 6026 section 7.2.
INVITE_CLIENT_TABLE: StateTable = {
    _S.CALLING: {
        _E.TIMER_A: _S.CALLING,  # re-send the INVITE; A doubles (no cap)
        _E.TIMER_B: _S.TERMINATED,  # TransactionTimeout "B"
        _E.RECV_1XX: _S.PROCEEDING,  # stop A and B; deliver
        _E.RECV_2XX: _S.ACCEPTED,  # stop A and B; deliver; start M = 64*T1
        _E.RECV_3XX_6XX: _S.COMPLETED,  # stop A and B; send ACK; deliver; start D
    },
    _S.PROCEEDING: {
        _E.RECV_1XX: _S.PROCEEDING,  # deliver
        _E.RECV_2XX: _S.ACCEPTED,  # deliver; start M
        _E.RECV_3XX_6XX: _S.COMPLETED,  # send ACK; deliver; start D
    },
    _S.ACCEPTED: {
        _E.RECV_2XX: _S.ACCEPTED,  # deliver, so the TU re-sends its ACK
        _E.TIMER_M: _S.TERMINATED,
    },
    _S.COMPLETED: {
        _E.RECV_3XX_6XX: _S.COMPLETED,  # re-send the ACK; do not deliver again
        _E.TIMER_D: _S.TERMINATED,
    },
    _S.TERMINATED: {},
}

#: Non-INVITE client transaction: RFC 3261 section 17.1.2.
NON_INVITE_CLIENT_TABLE: StateTable = {
    _S.TRYING: {
        _E.TIMER_E: _S.TRYING,  # re-send the request; E = min(2E, T2)
        _E.TIMER_F: _S.TERMINATED,  # TransactionTimeout "F"
        _E.RECV_1XX: _S.PROCEEDING,  # deliver
        _E.RECV_2XX: _S.COMPLETED,  # stop E and F; deliver; start K = T4 (0 reliable)
        _E.RECV_3XX_6XX: _S.COMPLETED,  # likewise
    },
    _S.PROCEEDING: {
        _E.TIMER_E: _S.PROCEEDING,  # re-send the request; E = T2
        _E.TIMER_F: _S.TERMINATED,  # TransactionTimeout "F"
        _E.RECV_1XX: _S.PROCEEDING,  # deliver
        _E.RECV_2XX: _S.COMPLETED,  # stop E and F; deliver; start K
        _E.RECV_3XX_6XX: _S.COMPLETED,  # likewise
    },
    _S.COMPLETED: {
        _E.RECV_2XX: _S.COMPLETED,  # absorb the retransmitted final
        _E.RECV_3XX_6XX: _S.COMPLETED,  # absorb
        _E.TIMER_K: _S.TERMINATED,
    },
    _S.TERMINATED: {},
}


def _status_event(status: int, *, sending: bool) -> TxEvent:
    if status < 200:
        return _E.SEND_1XX if sending else _E.RECV_1XX
    if status < 300:
        return _E.SEND_2XX if sending else _E.RECV_2XX
    return _E.SEND_3XX_6XX if sending else _E.RECV_3XX_6XX


# ---------------------------------------------------------------- timer queue


_HeapEntry: TypeAlias = tuple[float, int, TxEvent, "Transaction"]


class TimerQueue:
    """One heap of (deadline, token, timer, transaction) for the whole layer.

    Stopping a timer only forgets its token in the transaction; the heap entry
    stays and is discarded when it reaches the top (lazy deletion), which keeps
    stopping O(1) and the heap small enough (entries never outlive 64*T1).
    """

    def __init__(self) -> None:
        self.heap: list[_HeapEntry] = []
        self._tokens = itertools.count()

    def push(self, deadline: float, timer: TxEvent, tx: Transaction) -> int:
        token = next(self._tokens)
        heapq.heappush(self.heap, (deadline, token, timer, tx))
        return token


# ---------------------------------------------------------------- transactions


class Transaction:
    """State shared by the four transaction kinds.

    Attributes:
        request: the request that created the transaction.
        key: the matching key (RFC 3261 section 17.1.3 for client transactions,
            17.2.3 for server transactions).
        state: current `TransactionState`.
        last_response: the latest response sent (server) or received (client).
    """

    TABLE: ClassVar[StateTable]
    INITIAL: ClassVar[TransactionState]

    def __init__(
        self, request: Request, key: TransactionKey, timers: Timers, queue: TimerQueue
    ) -> None:
        self.request = request
        self.key = key
        self.state = self.INITIAL
        self.last_response: Response | None = None
        self._timers = timers
        self._queue = queue
        # timer -> token of its live heap entry; anything else in the heap is stale
        self._armed: dict[TxEvent, int] = {}

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated."""
        return self.state is _S.TERMINATED

    @property
    def reliable(self) -> bool:
        """True when the transaction runs over a reliable transport."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value} {self.key}>"

    # -- machinery -------------------------------------------------------------

    def _step(self, event: TxEvent) -> bool:
        """Apply `event` per the table; False (and no change) when not allowed."""
        nxt = self.TABLE[self.state].get(event)
        if nxt is None:
            return False
        self.state = nxt
        if nxt is _S.TERMINATED:
            self._armed.clear()
        return True

    def _arm(self, timer: TxEvent, delay: float, now: float) -> list[Output]:
        """Start `timer`; a zero delay fires it at once (RFC 3261's "zero seconds")."""
        if delay <= 0:
            return self._on_timer(timer, now)
        self._armed[timer] = self._queue.push(now + delay, timer, self)
        return []

    def _disarm(self, *timers: TxEvent) -> None:
        for timer in timers:
            self._armed.pop(timer, None)

    def _take_timer(self, timer: TxEvent, token: int) -> bool:
        """True (and forget it) when `token` is the live entry for `timer`."""
        if self._armed.get(timer) != token:
            return False
        del self._armed[timer]
        return True

    def _on_timer(self, timer: TxEvent, now: float) -> list[Output]:
        raise NotImplementedError


class ServerTransaction(Transaction):
    """A server transaction (RFC 3261 section 17.2).

    Attributes:
        source: where the request came from.
        response_target: where responses go (RFC 3261 section 18.2.2, RFC 3581).
    """

    def __init__(
        self,
        request: Request,
        key: TransactionKey,
        source: Target,
        response_target: Target,
        timers: Timers,
        queue: TimerQueue,
    ) -> None:
        super().__init__(request, key, timers, queue)
        self.source = source
        self.response_target = response_target

    @property
    def reliable(self) -> bool:
        """True when the request came over a reliable transport."""
        return self.source.reliable

    def _resend_last(self) -> list[Output]:
        if self.last_response is None:
            return []
        return [Send(self.last_response, self.response_target)]

    def _refuse(self, response: Response) -> TransactionError:
        return TransactionError(
            f"cannot send {response.status} in state {self.state.value} of {self!r}"
        )

    def _on_retransmission(self, now: float) -> list[Output]:
        raise NotImplementedError

    def _send_response(self, response: Response, now: float) -> list[Output]:
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    """INVITE server transaction (RFC 3261 section 17.2.1, RFC 6026 section 7.1).

    The TU sends 100 Trying itself; a 2xx moves to Accepted, where the TU (not
    this transaction) retransmits the 2xx until the ACK comes (see `Retransmitter`).
    """

    TABLE = INVITE_SERVER_TABLE
    INITIAL = _S.PROCEEDING

    def __init__(
        self,
        request: Request,
        key: TransactionKey,
        source: Target,
        response_target: Target,
        timers: Timers,
        queue: TimerQueue,
    ) -> None:
        super().__init__(request, key, source, response_target, timers, queue)
        self._g_interval = timers.t1

    def _on_retransmission(self, now: float) -> list[Output]:
        before = self.state
        if not self._step(_E.REQUEST):
            return []
        # In Accepted the 2xx is the TU's to retransmit; in Confirmed the ACK has
        # already shown that the final response arrived.
        if before in (_S.PROCEEDING, _S.COMPLETED):
            return self._resend_last()
        return []

    def _on_ack(self, ack: Request, source: Target, now: float) -> list[Output]:
        before = self.state
        if not self._step(_E.ACK):
            return []
        if before is _S.ACCEPTED:
            return [AckReceived(ack, self, source)]
        if before is _S.COMPLETED:
            self._disarm(_E.TIMER_G, _E.TIMER_H)
            # Timer I soaks up ACK retransmissions, which only unreliable
            # transports produce.
            return self._arm(_E.TIMER_I, 0.0 if self.reliable else self._timers.t4, now)
        return []

    def _send_response(self, response: Response, now: float) -> list[Output]:
        event = _status_event(response.status, sending=True)
        before = self.state
        if not self._step(event):
            raise self._refuse(response)
        self.last_response = response
        out: list[Output] = [Send(response, self.response_target)]
        if event is not _E.SEND_1XX:
            # From here on the request only serves matching: keep it small, as
            # many finished transactions wait out their timers at once.
            self.request.compact()
        if event is _E.SEND_2XX and before is _S.PROCEEDING:
            out += self._arm(_E.TIMER_L, self._timers.timeout, now)
        elif event is _E.SEND_3XX_6XX:
            if not self.reliable:
                self._g_interval = self._timers.t1
                out += self._arm(_E.TIMER_G, self._g_interval, now)
            out += self._arm(_E.TIMER_H, self._timers.timeout, now)
        return out

    def _on_timer(self, timer: TxEvent, now: float) -> list[Output]:
        if not self._step(timer):
            return []
        if timer is _E.TIMER_G:
            self._g_interval = min(2 * self._g_interval, self._timers.t2)
            out = self._resend_last()
            out += self._arm(_E.TIMER_G, self._g_interval, now)
            return out
        if timer is _E.TIMER_H:
            return [TransactionTimeout(self, "H")]
        return []


class NonInviteServerTransaction(ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 section 17.2.2), CANCEL included."""

    TABLE = NON_INVITE_SERVER_TABLE
    INITIAL = _S.TRYING

    def _on_retransmission(self, now: float) -> list[Output]:
        if not self._step(_E.REQUEST):
            return []
        return self._resend_last()  # nothing yet in Trying

    def _send_response(self, response: Response, now: float) -> list[Output]:
        event = _status_event(response.status, sending=True)
        if not self._step(event):
            raise self._refuse(response)
        self.last_response = response
        out: list[Output] = [Send(response, self.response_target)]
        if event is not _E.SEND_1XX:
            self.request.compact()  # see InviteServerTransaction._send_response
            # Timer J soaks up request retransmissions (unreliable transports only).
            delay = 0.0 if self.reliable else self._timers.timeout
            out += self._arm(_E.TIMER_J, delay, now)
        return out

    def _on_timer(self, timer: TxEvent, now: float) -> list[Output]:
        self._step(timer)
        return []


class ClientTransaction(Transaction):
    """A client transaction (RFC 3261 section 17.1).

    Attributes:
        target: where the request (and its retransmissions) go.
    """

    def __init__(
        self,
        request: Request,
        key: TransactionKey,
        target: Target,
        timers: Timers,
        queue: TimerQueue,
    ) -> None:
        super().__init__(request, key, timers, queue)
        self.target = target

    @property
    def reliable(self) -> bool:
        """True when the request goes over a reliable transport."""
        return self.target.reliable

    def _start(self, now: float) -> list[Output]:
        raise NotImplementedError

    def _on_response(self, response: Response, now: float) -> list[Output]:
        raise NotImplementedError


class InviteClientTransaction(ClientTransaction):
    """INVITE client transaction (RFC 3261 section 17.1.1, RFC 6026 section 7.2).

    Attributes:
        ack: the ACK this transaction built for a 300-699 response, once it has.
            The ACK for a 2xx is the TU's (RFC 3261 section 13.2.2.4).
    """

    TABLE = INVITE_CLIENT_TABLE
    INITIAL = _S.CALLING

    def __init__(
        self,
        request: Request,
        key: TransactionKey,
        target: Target,
        timers: Timers,
        queue: TimerQueue,
    ) -> None:
        super().__init__(request, key, target, timers, queue)
        self._a_interval = timers.t1
        self.ack: Request | None = None

    def _start(self, now: float) -> list[Output]:
        out: list[Output] = [Send(self.request, self.target)]
        if not self.reliable:
            out += self._arm(_E.TIMER_A, self._a_interval, now)
        out += self._arm(_E.TIMER_B, self._timers.timeout, now)
        return out

    def _on_response(self, response: Response, now: float) -> list[Output]:
        event = _status_event(response.status, sending=False)
        before = self.state
        if not self._step(event):
            return []
        if event is _E.RECV_3XX_6XX and before is _S.COMPLETED:
            # A retransmitted final means our ACK was lost: send it again.
            return [Send(self.ack, self.target)] if self.ack is not None else []
        self.last_response = response
        # Any response proves the INVITE arrived: stop retransmitting it, and
        # timer B only guards Calling (in Proceeding the TU decides to CANCEL).
        self._disarm(_E.TIMER_A, _E.TIMER_B)
        if event is _E.RECV_1XX or (event is _E.RECV_2XX and before is _S.ACCEPTED):
            return [ResponseReceived(response, self)]
        if event is _E.RECV_2XX:
            out: list[Output] = [ResponseReceived(response, self)]
            out += self._arm(_E.TIMER_M, self._timers.timeout, now)
            return out
        self.ack = build_ack(self.request, response)
        out = [Send(self.ack, self.target), ResponseReceived(response, self)]
        # Timer D must outlive the server's timer H so every retransmitted final
        # still finds us here to be ACKed again.
        delay = 0.0 if self.reliable else max(_TIMER_D_MIN, self._timers.timeout)
        out += self._arm(_E.TIMER_D, delay, now)
        return out

    def _on_timer(self, timer: TxEvent, now: float) -> list[Output]:
        if not self._step(timer):
            return []
        if timer is _E.TIMER_A:
            self._a_interval *= 2  # INVITE retransmissions are not capped at T2
            out: list[Output] = [Send(self.request, self.target)]
            out += self._arm(_E.TIMER_A, self._a_interval, now)
            return out
        if timer is _E.TIMER_B:
            return [TransactionTimeout(self, "B")]
        return []


class NonInviteClientTransaction(ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 section 17.1.2), CANCEL included."""

    TABLE = NON_INVITE_CLIENT_TABLE
    INITIAL = _S.TRYING

    def __init__(
        self,
        request: Request,
        key: TransactionKey,
        target: Target,
        timers: Timers,
        queue: TimerQueue,
    ) -> None:
        super().__init__(request, key, target, timers, queue)
        self._e_interval = timers.t1

    def _start(self, now: float) -> list[Output]:
        out: list[Output] = [Send(self.request, self.target)]
        if not self.reliable:
            out += self._arm(_E.TIMER_E, self._e_interval, now)
        out += self._arm(_E.TIMER_F, self._timers.timeout, now)
        return out

    def _on_response(self, response: Response, now: float) -> list[Output]:
        event = _status_event(response.status, sending=False)
        before = self.state
        if not self._step(event):
            return []
        if before is _S.COMPLETED:
            return []  # retransmitted final: already delivered
        self.last_response = response
        out: list[Output] = [ResponseReceived(response, self)]
        if event is _E.RECV_1XX:
            return out  # E keeps running, at T2 from its next firing
        self._disarm(_E.TIMER_E, _E.TIMER_F)
        # Timer K soaks up response retransmissions (unreliable transports only).
        out += self._arm(_E.TIMER_K, 0.0 if self.reliable else self._timers.t4, now)
        return out

    def _on_timer(self, timer: TxEvent, now: float) -> list[Output]:
        if not self._step(timer):
            return []
        if timer is _E.TIMER_E:
            if self.state is _S.PROCEEDING:
                # A provisional says the server has it; retransmit only to keep
                # the final response coming, at the slow rate.
                self._e_interval = self._timers.t2
            else:
                self._e_interval = min(2 * self._e_interval, self._timers.t2)
            out: list[Output] = [Send(self.request, self.target)]
            out += self._arm(_E.TIMER_E, self._e_interval, now)
            return out
        if timer is _E.TIMER_F:
            return [TransactionTimeout(self, "F")]
        return []


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a 300-699 response to `invite` (RFC 3261 section 17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE; only the
    INVITE's top Via; To from the response (with its tag); the INVITE's Route
    headers; Max-Forwards 70.

    Raises:
        SipParseError: the INVITE's Via or CSeq cannot be parsed.
        IndexError: the INVITE has no Via.
    """
    ack = Request(method="ACK", uri=invite.uri)
    headers = ack.headers
    headers.add("Via", invite.headers.get_list("Via")[0])
    headers.add("Max-Forwards", "70")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} ACK")
    return ack
