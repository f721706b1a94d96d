"""Dialogs (RFC 3261 section 12): identity, route set, CSeq rules, requests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.headers import Address
from mediaserver.sip.message import Request, Response
from mediaserver.sip.uri import Uri


def new_tag() -> str:
    """A fresh, globally unique enough From/To tag (RFC 3261 section 19.3)."""
    return secrets.token_hex(6)


@dataclass
class Dialog:
    """One dialog, from our side of it.

    As UAS, `local` is the INVITE's To (plus our tag) and `remote` its From; the
    route set is the INVITE's Record-Route in order (section 12.1.1). As UAC,
    `local` is our INVITE's From and `remote` the 2xx's To; the route set is the
    2xx's Record-Route in reverse order (section 12.1.2).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local: Address
    remote: Address
    remote_target: Uri
    route_set: list[Address] = field(default_factory=list)
    local_seq: int = 0
    #: Highest CSeq seen from the peer (None until the first request counts).
    remote_seq: int | None = None
    secure: bool = False

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str) -> Dialog:
        """Build the UAS dialog for `invite` answered with `local_tag`.

        Raises:
            SipParseError: the INVITE has no usable Contact.
        """
        contacts = invite.contacts
        if len(contacts) > 1:
            raise SipParseError("INVITE with more than one Contact")
        to = invite.to
        # A copy: parsed headers are cached on the message and shared.
        local = Address(to.uri, to.display_name, {**to.params, "tag": local_tag}, to.bracketed)
        remote = invite.from_
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote.tag or "",
            local=local,
            remote=remote,
            # RFC 2543 peers may omit Contact: their From is then the target.
            remote_target=contacts[0].uri if contacts else remote.uri,
            route_set=invite.addresses("Record-Route"),
            # RFC 3261 12.1.1: the UAS's local sequence number starts empty; any
            # value works, we start at a random-ish small number.
            local_seq=secrets.randbelow(10_000) + 1,
            remote_seq=invite.cseq.seq,
            secure=invite.ruri.scheme == "sips",
        )

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """Build the UAC dialog that the 2xx `response` to our `invite` creates.

        Raises:
            SipParseError: the 2xx has no To tag or no usable Contact.
        """
        remote = response.to
        if not remote.tag:
            raise SipParseError("2xx without a To tag")
        contacts = response.contacts
        if len(contacts) != 1:
            raise SipParseError(f"2xx with {len(contacts)} Contacts, expected one")
        local = invite.from_
        return cls(
            call_id=invite.call_id,
            local_tag=local.tag or "",
            remote_tag=remote.tag,
            local=local,
            remote=remote,
            remote_target=contacts[0].uri,
            route_set=list(reversed(response.addresses("Record-Route"))),
            local_seq=invite.cseq.seq,
            secure=invite.ruri.scheme == "sips",
        )

    @property
    def key(self) -> tuple[str, str, str]:
        """Dialog id as (Call-ID, local tag, remote tag)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    def accept_remote_cseq(self, request: Request) -> bool:
        """Apply section 12.2.2: an in-dialog request with a lower CSeq is refused (500).

        ACK and CANCEL carry the INVITE's number and are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return True
        seq = request.cseq.seq
        if self.remote_seq is not None and seq <= self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def refresh_target(self, request: Request) -> None:
        """Target refresh (re-INVITE, UPDATE): take the new Contact if one is given."""
        try:
            contacts = request.contacts
        except SipParseError:
            return
        if len(contacts) == 1:
            self.remote_target = contacts[0].uri

    def create_request(self, method: str, *, via: str, contact: str | None = None) -> Request:
        """Build an in-dialog request (section 12.2.1.1) with a new local CSeq.

        `via` is the complete top Via value (with a fresh branch). The ACK for a
        2xx is not built here (it reuses the INVITE's CSeq number).
        """
        self.local_seq += 1
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and "lr" not in routes[0].uri.params:
            # Strict router: it goes in the Request-URI; the remote target at the end.
            uri = routes.pop(0).uri
            routes.append(Address(uri=self.remote_target))
        req = Request(method=method, uri=str(uri))
        req.headers.add("Via", via)
        req.headers.add("Max-Forwards", "70")
        for route in routes:
            req.headers.add("Route", str(route))
        req.headers.add("From", str(self.local))
        req.headers.add("To", str(self.remote))
        req.headers.add("Call-ID", self.call_id)
        req.headers.add("CSeq", f"{self.local_seq} {method}")
        if contact is not None:
            req.headers.add("Contact", contact)
        return req

    def next_hop(self) -> Uri:
        """The URI whose host/port the next request is sent to (RFC 3263 lite)."""
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target
