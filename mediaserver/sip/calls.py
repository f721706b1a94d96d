"""What the user-agent core keeps and tells: calls, their states, the events for
the application, and its configuration (`mediaserver.sip.ua` is the behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

from mediaserver.codecs.params import MediaOffer, NegotiatedMedia
from mediaserver.sip.auth import DigestAuth
from mediaserver.sip.dialog import Dialog
from mediaserver.sip.edge import EdgePolicy
from mediaserver.sip.message import DEFAULT_LIMITS, Limits, Request, Response
from mediaserver.sip.offer_answer import SdpSession
from mediaserver.sip.registrar import Registrar
from mediaserver.sip.registration import TrunkRegistration
from mediaserver.sip.session_timer import Negotiated, SessionTimerPolicy
from mediaserver.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    Send,
    ServerTransaction,
    Target,
    Timers,
)
from mediaserver.sip.transaction_layer import Retransmitter
from mediaserver.sip.trunks import TrunkTable

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "AuthRejected",
    "Call",
    "CallConfirmed",
    "CallEnded",
    "CallIncoming",
    "CallMediaChanged",
    "CallRinging",
    "CallState",
    "Dropped",
    "DtmfInfo",
    "Event",
    "MediaProvider",
    "PendingOk",
    "PendingReliable",
    "Registered",
    "TransferOutcome",
    "TrunkRegistration",
    "UaConfig",
    "parse_dtmf_info",
]


#: SIP extensions we support (Supported, and Require we accept): session
#: timers (RFC 4028) and reliable provisional responses (RFC 3262).
SUPPORTED_EXTENSIONS = ("timer", "100rel")


class MediaProvider(Protocol):
    """Hands out our side of a call's media (address, RTP port, codecs)."""

    def allocate(self) -> MediaOffer | None:
        """Reserve media for a new call, or None when no port is free."""

    def release(self, offer: MediaOffer) -> None:
        """Return what `allocate` gave."""


class CallState(Enum):
    """Signalling state of one call."""

    DIALING = "dialing"  # our INVITE sent (outbound leg), no final response yet
    INCOMING = "incoming"  # INVITE received, no final response yet
    ANSWERED = "answered"  # 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"  # ACK received
    ENDING = "ending"  # we sent BYE
    ENDED = "ended"


@dataclass
class PendingOk:
    """A 2xx to an INVITE, re-sent by the TU until the ACK (RFC 3261 13.3.1.4)."""

    tx: InviteServerTransaction
    response: Response
    retransmit: Retransmitter


@dataclass
class PendingReliable:
    """A reliable provisional response (RFC 3262) awaiting its PRACK."""

    response: Response
    rseq: int
    retransmit: Retransmitter
    #: It carried the SDP answer: no 2xx before its PRACK.
    has_sdp: bool


@dataclass
class Call:
    """Signalling state of one call. Only `UserAgent` mutates it."""

    id: str
    invite: Request
    #: The INVITE's transaction: a server one for a call we answer, a client
    #: one for a leg we dial (`outbound`).
    invite_tx: InviteServerTransaction | InviteClientTransaction
    #: Where the INVITE came from (inbound) or went to (outbound).
    source: Target
    user: str
    local_tag: str
    offer: MediaOffer
    sdp: SdpSession
    created_at: float
    state: CallState = CallState.INCOMING
    dialog: Dialog | None = None
    media: NegotiatedMedia | None = None
    answer_body: bytes = b""
    #: The INVITE had no SDP: our 2xx carries the offer and the ACK the answer.
    offer_in_answer: bool = False
    #: Our latest 2xx to an INVITE (initial or re-INVITE), re-sent until ACKed.
    ok: PendingOk | None = None
    timer: Negotiated | None = None
    refresh_at: float | None = None
    expire_at: float | None = None
    #: An INVITE or UPDATE from the peer we have not answered yet.
    remote_pending: ServerTransaction | None = None
    #: Our own re-INVITE/UPDATE in flight (glare detection, section 14.2).
    local_pending: ClientTransaction | None = None
    #: Our ACK for the 2xx to our last re-INVITE, re-sent if that 2xx repeats.
    local_ack: tuple[ClientTransaction, Send] | None = None
    bye_pending: str | None = None
    bye_tx: ClientTransaction | None = None
    #: Our REFER in flight or awaiting its final NOTIFY (RFC 3515).
    refer_tx: ClientTransaction | None = None
    refer_open: bool = False
    answered_at: float | None = None
    end_reason: str = ""
    #: We dialed this leg (B2BUA); `user` is then our From user.
    outbound: bool = False
    #: Hung up while dialing before any provisional response: CANCEL once one
    #: comes (RFC 3261 section 9.1 forbids it earlier).
    cancel_pending: bool = False
    #: The final status that ended an outbound leg before it was answered.
    final_status: int | None = None
    #: The user whose digest credentials the INVITE carried and passed.
    auth_user: str | None = None
    #: Why a provisioned user's digest failed (the app runs its auth-failure flow).
    auth_error: str | None = None
    #: The trunk it came through, and the number called (E.164), if any.
    trunk: str | None = None
    called: str | None = None
    #: What the network asserts about the caller (`trunks.caller_identity`).
    identity: dict[str, object] = field(default_factory=dict)
    #: 100rel (RFC 3262): our reliable 183 awaiting its PRACK, the last RSeq
    #: (ours as UAS, the peer's we PRACKed as UAC), a 2xx held for the PRACK,
    #: and a leg's early dialog (its PRACKs go there).
    reliable: PendingReliable | None = None
    rseq: int = 0
    answer_deferred: bool = False
    early_dialog: Dialog | None = None
    #: A number we dial through trunks: as given, our display name, the trunks
    #: still to try, the ones that failed ("name:status"), and whether this
    #: trunk's challenge has been answered already.
    dialled: str = ""
    display: str | None = None
    trunk_queue: list[str] = field(default_factory=list)
    failovers: list[str] = field(default_factory=list)
    auth_answered: bool = False
    #: The first 18x to a leg we dial was reported (`CallRinging`).
    rang: bool = False
    #: The caller ID a leg we dial presents (From user; through a trunk also
    #: its P-Asserted-Identity), when not the trunk's own.
    caller_id: str | None = None

    @property
    def on_hold(self) -> bool:
        """The peer has put us on hold (sendonly/inactive or 0.0.0.0)."""
        return bool(self.media and self.media.on_hold)


@dataclass(frozen=True)
class CallIncoming:
    """A new call passed admission and offer/answer; the app should ring/answer/reject."""

    call: Call


@dataclass(frozen=True)
class CallConfirmed:
    """The ACK for our 2xx arrived."""

    call: Call


@dataclass(frozen=True)
class CallRinging:
    """A leg we dial got its first 180 or 183 (the callee's phone rings)."""

    call: Call
    status: int


@dataclass(frozen=True)
class CallMediaChanged:
    """A re-INVITE or UPDATE changed the media (e.g. hold or unhold)."""

    call: Call


@dataclass(frozen=True)
class CallEnded:
    """The call is over; `by` is "remote", "local" or "timeout"."""

    call: Call
    reason: str
    by: str


@dataclass(frozen=True)
class DtmfInfo:
    """A DTMF digit received in SIP INFO."""

    call: Call
    digit: str
    duration_ms: int


@dataclass(frozen=True)
class Dropped:
    """A message got no response (unparseable, stray, ...): log it."""

    reason: str
    source: Target
    status: int | None = None


@dataclass(frozen=True)
class Blocked:
    """The edge defences refused a message (`status` None: dropped unanswered):
    count it, log it (rate-limited)."""

    reason: str
    source: Target
    status: int | None = None


@dataclass(frozen=True)
class AuthRejected:
    """A request was refused for its credentials (403): log and count it."""

    method: str
    user: str
    reason: str
    source: Target


@dataclass(frozen=True)
class Registered:
    """A REGISTER was applied: `user` now has `bindings` live contacts."""

    user: str
    source: Target
    bindings: int


@dataclass(frozen=True)
class TransferOutcome:
    """How a REFER we sent ended (RFC 3515): `ok` once the transferee's new call
    was answered (a NOTIFY with a 2xx sipfrag), else the status that failed it
    (the REFER's own error response, or the sipfrag's final status)."""

    call: Call
    ok: bool
    status: int
    reason: str
    #: The peer refused the REFER itself (an error response to it), as opposed
    #: to accepting it and then failing to reach the target: the caller's side
    #: will not transfer, so the call can be bridged instead.
    refused: bool = False


Event = (
    Send
    | CallIncoming
    | CallConfirmed
    | CallRinging
    | CallMediaChanged
    | CallEnded
    | DtmfInfo
    | TransferOutcome
    | AuthRejected
    | Registered
    | Dropped
    | Blocked
    | TrunkRegistration
)


@dataclass
class UaConfig:
    """Settings of the UAS core."""

    #: transport -> (host, port) we advertise in Via and Contact.
    local: dict[str, tuple[str, int]]
    #: Request-URI users that have an application.
    routes: frozenset[str]
    max_calls: int = 500
    retry_after: int = 5
    timers: Timers = field(default_factory=Timers)
    session: SessionTimerPolicy = field(default_factory=SessionTimerPolicy)
    user_agent: str = "mediaserver"
    limits: Limits = DEFAULT_LIMITS
    #: Digest authentication of REGISTER and INVITE (None: nobody is challenged).
    auth: DigestAuth | None = None
    #: The registrar (REGISTER is answered 405 without one).
    registrar: Registrar | None = None
    #: Which INVITEs are challenged: "users" (From names a provisioned user),
    #: "all" (unknown users get 403), or "off". A trunk's INVITEs never are.
    invite_auth: Literal["users", "all", "off"] = "users"
    #: Providers calling from known addresses, routed by the called number.
    trunks: TrunkTable = field(default_factory=TrunkTable)
    #: Rate limits, bans, scanners, call limits (None: off).
    edge: EdgePolicy | None = None
    #: SRTP mode of calls ("off", "optional", "required"), and per route.
    srtp: str = "off"
    route_srtp: dict[str, str] = field(default_factory=dict)


def parse_dtmf_info(body: bytes, ctype: str) -> tuple[str, int]:
    """Digit and duration from application/dtmf-relay or application/dtmf."""
    text = body.decode("utf-8", errors="replace").strip()
    if ctype == "application/dtmf":
        return (text[:1] if text[:1] in "0123456789*#ABCDabcd" else ""), 0
    digit, duration = "", 0
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "signal" and value[:1] in "0123456789*#ABCDabcd":
            digit = value[:1].upper()
        elif key == "duration" and value.isdigit():
            duration = int(value)
    return digit, duration
