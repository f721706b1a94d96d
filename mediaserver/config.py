"""Server configuration: YAML in, validated settings out.

Relative paths (prompt files, recording folders) are taken relative to the
config file's folder, so a config works from any working directory.

A broken file gives one line that names the key, e.g.
`config error: sip.max_calls: Input should be greater than 0`.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from mediaserver.codecs.params import CODECS
from mediaserver.faults import FaultSettings
from mediaserver.media.session import SessionSettings
from mediaserver.pipeline.settings import PipelineSettings
from mediaserver.sip.edge import DEFAULT_SCANNERS
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.trunks import Trunk, TrunkOutbound, normalise_number
from mediaserver.sip.uri import parse_uri
from mediaserver.strict import Strict


class Listen(Strict):
    """One SIP listening socket."""

    transport: Literal["udp", "tcp", "tls"] = "udp"
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535)
    #: Address put in Via/Contact when it differs from `host` (e.g. 0.0.0.0 binds).
    advertise: str | None = None


class Tls(Strict):
    """Certificate and key for TLS listeners (PEM files)."""

    cert: Path | None = None
    key: Path | None = None


class SipUser(Strict):
    """One provisioned SIP user: `password`, or `ha1` = md5("user:realm:password")
    so the file need not hold the password (MD5 digests only)."""

    password: str | None = Field(None, min_length=1)
    ha1: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")

    @model_validator(mode="after")
    def _one_secret(self) -> SipUser:
        if (self.password is None) == (self.ha1 is None):
            raise ValueError("give exactly one of password and ha1")
        return self


DigestAlgorithm = Literal["MD5", "SHA-256"]


def _md5_only() -> list[DigestAlgorithm]:
    return ["MD5"]


class SipAuth(Strict):
    """Digest authentication (RFC 3261 section 22) of REGISTER and INVITE."""

    realm: str = Field("mediaserver", min_length=1)
    #: Provisioned users by name; with none, nobody is challenged and REGISTER gets 405.
    users: dict[str, SipUser] = Field(default_factory=dict)
    #: Which INVITEs are challenged: "users" (the From user is provisioned: whoever
    #: says they are alice proves it; trunks and other callers are not asked),
    #: "all" (every caller must be a trunk or a provisioned user; with no users,
    #: only trunks may call), or "off".
    invites: Literal["users", "all", "off"] = "users"
    #: Offered in this order (RFC 8760 prefers SHA-256; many phones know only MD5).
    algorithms: list[DigestAlgorithm] = Field(default_factory=_md5_only, min_length=1)
    #: Seconds a nonce stays valid (then the phone is re-challenged with stale=true).
    nonce_ttl: float = Field(300.0, gt=0)
    #: HMAC key of the nonces; give every worker behind one proxy the same one so
    #: each accepts the others' nonces (default: random per process).
    nonce_secret: str | None = Field(None, min_length=16)
    #: Failed attempts one address may make for one user per `failure_window`
    #: seconds, then that pair's attempts get 403 until the window has passed.
    max_failures: int = Field(10, gt=0)
    failure_window: float = Field(60.0, gt=0)


class RegistrarSettings(Strict):
    """Registration intervals and limits (active when `sip.auth.users` is set)."""

    min_expires: int = Field(60, ge=1)
    max_expires: int = Field(3600, ge=1)
    max_contacts: int = Field(10, gt=0)
    #: Share the bindings with the other workers through the records database
    #: (`mediaserver cluster` turns it on for its workers).
    shared: bool = False

    @model_validator(mode="after")
    def _order(self) -> RegistrarSettings:
        if self.max_expires < self.min_expires:
            raise ValueError("max_expires must be at least min_expires")
        return self


class EdgeSettings(Strict):
    """Defences of a SIP port on the open internet (see `sip/edge.py`): per-source
    rate limits and bans, scanner User-Agents, concurrent-call limits."""

    enabled: bool = True
    #: Requests a second from one address, after a burst of `request_burst`.
    request_rate: float = Field(50.0, gt=0)
    request_burst: float = Field(100.0, ge=1)
    #: New INVITEs a second from one address, after a burst of `invite_burst`.
    invite_rate: float = Field(5.0, gt=0)
    invite_burst: float = Field(20.0, ge=1)
    #: Offences (limit breaches, failed digests, scanner requests) within
    #: `ban_window` seconds that ban the address for `ban_time` seconds.
    ban_after: int = Field(10, ge=1)
    ban_window: float = Field(60.0, gt=0)
    ban_time: float = Field(600.0, ge=0)
    #: Addresses tracked at once (the longest-quiet ones are forgotten first).
    max_sources: int = Field(100_000, ge=1)
    #: Substrings of scanner User-Agents (case-insensitive).
    scanner_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SCANNERS))
    #: A scanner's request, and a request to a user or number we do not have
    #: from an address that is neither a trunk nor a registered phone: no
    #: answer ("drop") or 403 ("reject").
    scanners: Literal["drop", "reject"] = "drop"
    unknown: Literal["drop", "reject"] = "drop"
    #: Calls at once from one address, and by one caller user (0: no limit).
    max_calls_per_source: int = Field(0, ge=0)
    max_calls_per_user: int = Field(0, ge=0)
    #: Networks (CIDR) none of this applies to: this host's own processes, a
    #: proxy in front of us. Trunks' addresses are exempt as well.
    trusted: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    @model_validator(mode="after")
    def _networks(self) -> EdgeSettings:
        for cidr in self.trusted:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"trusted: not a network: {cidr!r}") from None
        return self


class TrunkOutboundSettings(Strict):
    """How we call out through a provider (and register with it)."""

    #: The provider's proxy: "host", "host:port" or "sip:host:port;transport=tcp".
    proxy: str = Field(min_length=1)
    #: The provider's SIP domain for Request-URI, From and To (default: the proxy's host).
    domain: str = ""
    username: str = ""
    password: str = ""
    #: Keep our contact registered with the provider (needs username and
    #: password). The key is `register` (an attribute of pydantic's models).
    registers: bool = Field(False, alias="register")
    #: Registration lifetime asked for, seconds.
    expires: int = Field(600, ge=30, le=86_400)
    #: The number (or user) and name callees see (default: `username`).
    caller_id: str = ""
    caller_name: str = ""
    #: Send called numbers without the "+".
    strip_plus: bool = False

    @model_validator(mode="after")
    def _valid(self) -> TrunkOutboundSettings:
        self.where()
        if self.registers and not (self.username and self.password):
            raise ValueError("register needs username and password")
        return self

    def where(self) -> tuple[str, int, str]:
        """(host, port, transport) of the proxy."""
        text = self.proxy if self.proxy.startswith(("sip:", "sips:")) else f"sip:{self.proxy}"
        try:
            uri = parse_uri(text)
        except SipParseError:
            raise ValueError(f"proxy: not a host or SIP URI: {self.proxy!r}") from None
        transport = (uri.params.get("transport") or "udp").lower()
        if transport not in ("udp", "tcp", "tls") or not uri.host:
            raise ValueError(f"proxy: not a host or SIP URI: {self.proxy!r}")
        host, port = uri.host_port(5061 if transport == "tls" else 5060)
        return host.strip("[]"), port, transport


class TrunkSettings(Strict):
    """One provider's trunk: the addresses it calls from, the numbers it
    brings, and how we call out through it."""

    #: Networks (CIDR, IPv4 or IPv6) whose INVITEs are this trunk's: accepted
    #: without digest, routed by the called number. Default: the outbound
    #: proxy's address, when it is one.
    allow: list[str] = Field(default_factory=list)
    #: Calling out through the provider (none: the trunk only brings calls).
    outbound: TrunkOutboundSettings | None = None
    #: SRTP for this trunk's calls, both ways (default: the route's, then `media.srtp`).
    srtp: Literal["off", "optional", "required"] | None = None
    #: Called number (E.164 "+15551230000", or any form `country_code` makes
    #: one of) -> route name.
    numbers: dict[str, str] = Field(default_factory=dict)
    #: The route of numbers not in `numbers` (none: they get 404).
    default_route: str | None = None
    #: For national forms of the called number ("1", "44"), and the prefixes
    #: dialled before an international / a national number.
    country_code: str = Field("", pattern=r"^[0-9]{0,3}$")
    international_prefix: str = Field("00", pattern=r"^[0-9]*$")
    national_prefix: str = Field("0", pattern=r"^[0-9]*$")
    #: Calls at once through this trunk (0: only the server's `max_calls`).
    max_calls: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _valid(self) -> TrunkSettings:
        if not self.allow and self.outbound is None:
            raise ValueError("allow: needs at least one network (or outbound settings)")
        for cidr in self.allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"allow: not a network: {cidr!r}") from None
        for number in self.numbers:
            if not normalise_number(
                number, self.country_code, self.international_prefix, self.national_prefix
            ):
                raise ValueError(f"numbers: not a phone number: {number!r}")
        return self

    def trunk(self, name: str) -> Trunk:
        """The sans-IO trunk of these settings (the outbound proxy's name resolved).

        Raises:
            ValueError: the proxy's host name does not resolve.
        """
        forms = (self.country_code, self.international_prefix, self.national_prefix)
        allow = list(self.allow)
        outbound = None
        if self.outbound is not None:
            o = self.outbound
            name_or_address, port, transport = o.where()
            try:
                # Once, at start-up: the core must never wait for DNS.
                host = str(socket.getaddrinfo(name_or_address, port)[0][4][0])
            except OSError as exc:
                raise ValueError(
                    f"trunks.{name}.outbound.proxy: cannot resolve {name_or_address!r}: {exc}"
                ) from None
            outbound = TrunkOutbound(
                host, port, transport, o.domain or name_or_address, o.username, o.password,
                o.registers, o.expires, o.caller_id, o.caller_name, o.strip_plus,
            )  # fmt: skip
            if not allow:
                with contextlib.suppress(ValueError):
                    allow.append(str(ipaddress.ip_network(host)))
        return Trunk(
            name=name,
            allow=tuple(ipaddress.ip_network(c, strict=False) for c in allow),
            outbound=outbound,
            srtp=self.srtp,
            numbers={normalise_number(n, *forms)[0]: r for n, r in self.numbers.items()},
            default_route=self.default_route,
            country_code=self.country_code,
            international_prefix=self.international_prefix,
            national_prefix=self.national_prefix,
            max_calls=self.max_calls,
        )


class SipSettings(Strict):
    """SIP signalling settings."""

    listen: list[Listen] = Field(
        default_factory=lambda: [Listen(transport="udp"), Listen(transport="tcp")], min_length=1
    )
    tls: Tls = Field(default_factory=Tls)
    max_calls: int = Field(500, gt=0)
    retry_after: int = Field(5, ge=0)
    session_expires: int = Field(1800, ge=0)
    min_se: int = Field(90, ge=90)
    t1: float = Field(0.5, gt=0)
    t2: float = Field(4.0, gt=0)
    t4: float = Field(5.0, gt=0)
    user_agent: str = "mediaserver"
    #: How an agent's transfer reaches its target: "auto" sends REFER when the
    #: caller's side allows it and bridges the call as a B2BUA when it does not
    #: (no REFER in its Allow, or the REFER is refused); "refer" never bridges;
    #: "bridge" always does.
    transfer: Literal["auto", "refer", "bridge"] = "auto"
    #: Seconds a bridged transfer's target may ring before we give up (CANCEL).
    bridge_ring_timeout: float = Field(20.0, gt=0)
    #: Where agents may transfer, bridge and dial: shell-style patterns on the
    #: target ("+1555*", "*@pbx.example.com", "1???") and "registered" (phones
    #: registered here); anything else is a transfer_failure. None: anywhere
    #: (set it on a public server: a prompt-injected model could dial anywhere).
    transfer_allow: list[str] | None = None
    auth: SipAuth = Field(default_factory=SipAuth)
    registrar: RegistrarSettings = Field(default_factory=RegistrarSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)

    @model_validator(mode="after")
    def _tls_needs_files(self) -> SipSettings:
        if any(lst.transport == "tls" for lst in self.listen) and not (
            self.tls.cert and self.tls.key
        ):
            raise ValueError("tls.cert and tls.key are required for a tls listener")
        if self.session_expires and self.session_expires < self.min_se:
            raise ValueError("session_expires must be 0 or at least min_se")
        return self


class MediaSettings(Strict):
    """RTP settings (the media layer grows these)."""

    address: str = "127.0.0.1"
    port_min: int = Field(40000, ge=1024, le=65534)
    port_max: int = Field(40999, ge=1025, le=65535)
    codecs: list[str] = Field(default_factory=lambda: ["PCMU", "PCMA", "G722", "telephone-event"])
    #: Receive-side reorder window of the jitter buffer, seconds.
    jitter_window: float = Field(0.040, gt=0, le=1.0)
    #: End the call (BYE) after this many seconds without RTP from the caller
    #: (not counted while the caller holds the call with inactive/recvonly); 0: never.
    inactivity_timeout: float = Field(30.0, ge=0)
    #: Latch to RTP from any address (callers behind NAT whose media comes from
    #: another host than their SDP says); by default only the SDP host may.
    latch_any_address: bool = False
    #: Subtract the agent's own voice when the caller's phone sends it back (poor
    #: echo cancellation), so it cannot interrupt the agent (`media/echo.py`).
    echo_cancel: bool = True
    #: SRTP with SDES keys (RFC 4568): "off" (plain RTP; RTP/SAVP offers get
    #: 488), "optional" (SRTP when the peer offers or accepts it), "required"
    #: (plain offers get 488). Keys travel in SDP: use it with TLS signalling.
    srtp: Literal["off", "optional", "required"] = "off"
    #: Record every call to a stereo WAV (caller left, server right).
    record_calls: bool = False
    recordings_dir: Path = Path("recordings")
    #: Delete recordings older than this many days (checked hourly; None: keep).
    recordings_retention_days: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> MediaSettings:
        self.recordings_dir = _resolve(self.recordings_dir)
        if self.port_max <= self.port_min:
            raise ValueError("port_max must be above port_min")
        for name in self.codecs:
            if name.upper() not in CODECS:
                raise ValueError(f"unknown codec {name!r} (known: {', '.join(sorted(CODECS))})")
        return self

    def for_call(self, call_id: str) -> SessionSettings:
        """The RTP session settings of call `call_id` (its recording file included)."""
        return SessionSettings(
            jitter_window=self.jitter_window,
            inactivity_timeout=self.inactivity_timeout,
            latch_any_address=self.latch_any_address,
            echo_cancel=self.echo_cancel,
            record_path=self.recordings_dir / f"{call_id}.wav" if self.record_calls else None,
            recordings_dir=self.recordings_dir,
            record_name=call_id,
        )


class PromptSection(Strict):
    """A section of an agent's prompt (the SDK's `prompt_add_section`)."""

    title: str
    body: str = ""
    bullets: list[str] = Field(default_factory=list)
    numbered: bool = False
    numbered_bullets: bool = False
    subsections: list[dict[str, Any]] = Field(default_factory=list)


class LanguageConfig(Strict):
    """A language of an agent (the SDK's `add_language`)."""

    name: str
    code: str
    voice: str
    speech_fillers: list[str] = Field(default_factory=list)
    function_fillers: list[str] = Field(default_factory=list)
    engine: str | None = None
    model: str | None = None


class HttpRequest(Strict):
    """A data tool's web service call (its answer fills the tool's `response`)."""

    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(5.0, gt=0)


class ToolConfig(Strict):
    """A tool of a config-declared agent: a Python callable, a response template,
    or a template filled from a web service."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str = ""
    #: The arguments: a JSON object schema (as in OpenAI's API), or the SDK's
    #: bare properties map `{arg: {type: string, description: ...}}`.
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: Required arguments (with a properties map; an object schema has its own).
    required: list[str] = Field(default_factory=list)
    #: "package.module:function", called as function(**arguments).
    function: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
    #: A reply template instead of a function, e.g. "Order {order_id} has shipped."
    response: str | None = None
    #: Fill `response` from this web service's JSON answer.
    http: HttpRequest | None = None
    #: A SignalWire DataMap (expressions, webhooks, output), run in-process.
    data_map: dict[str, Any] | None = None
    fillers: list[str] = Field(default_factory=list)
    timeout: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_target(self) -> ToolConfig:
        targets = [t for t in (self.function, self.response, self.data_map) if t is not None]
        if len(targets) != 1 or (self.http is not None and self.response is None):
            raise ValueError(
                "a tool needs exactly one of `function`, `response` (with optional `http`) "
                "or `data_map`"
            )
        properties = self.object_schema().get("properties", {})
        if not isinstance(properties, dict) or not all(
            isinstance(p, dict) for p in properties.values()
        ):
            raise ValueError("parameters: each argument is a mapping ({type: ..., ...})")
        unknown = [r for r in self.required if r not in properties]
        if unknown:
            raise ValueError(f"required names unknown parameters: {', '.join(unknown)}")
        return self

    def object_schema(self) -> dict[str, Any]:
        """The arguments as a JSON object schema (whichever form they were given in)."""
        params = self.parameters
        if params.get("type") == "object" or "properties" in params:
            schema: dict[str, Any] = {"type": "object", **params}
        else:
            schema = {"type": "object", "properties": dict(params)}
        if self.required:
            schema["required"] = list(dict.fromkeys([*schema.get("required", []), *self.required]))
        return schema


class ReplyConfig(Strict):
    """A canned reply of the scripted engine."""

    match: list[str] = Field(min_length=1)
    reply: str


class SkillConfig(Strict):
    """A skill an agent adds (`AgentBase.add_skill(name, params)`)."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class AgentConfig(Strict):
    """An agent declared in config: inline in a route (app `agent`), or a YAML
    agent file (`mediaserver.agent.yaml_agent`, which adds `route`).

    The SignalWire-style keys (`languages`, `params` in the SDK's units,
    `post_prompt`, `global_data`) and the server's own (`replies`, `fallback`
    for the scripted engine, `pipeline` overrides) work in both.
    """

    name: str | None = None
    #: The system prompt: text, or the SDK's sections.
    prompt: list[PromptSection] | str = "You are a helpful voice assistant on a phone call."
    #: Said when the call is answered (None: `params.static_greeting`, else the model).
    greeting: str | None = "Hello! How can I help you?"
    post_prompt: str | None = None
    languages: list[LanguageConfig] = Field(default_factory=list)
    #: The SDK's `set_params` (end_of_speech_timeout in ms, static_greeting, ...).
    params: dict[str, Any] = Field(default_factory=dict)
    hints: list[str] = Field(default_factory=list)
    global_data: dict[str, Any] = Field(default_factory=dict)
    tools: list[ToolConfig] = Field(default_factory=list)
    #: Skills by name: `[datetime, {name: web_search, params: {...}}]`.
    skills: list[SkillConfig | str] = Field(default_factory=list)
    #: Contexts and steps in the SDK's shape (`{default: {steps: [{name, text, ...}]}}`).
    contexts: dict[str, Any] | None = None
    replies: list[ReplyConfig] = Field(default_factory=list)
    fallback: str = "I'm sorry, I can't help with that."
    #: Overrides of the top-level `pipeline` settings for this agent (merged key by key).
    pipeline: dict[str, Any] = Field(default_factory=dict)


class Consent(Strict):
    """Recording consent: an announcement as the agent's first words, then the
    caller's consent if required; the call is recorded only once it is given."""

    #: Said in the agent's voice ("This call may be recorded. Press 1 or say yes
    #: to agree.") or played (a WAV).
    say: str | None = None
    file: Path | None = None
    #: "none" (the announcement is enough), "dtmf" (`key`), "voice" (a yes), "any".
    require: Literal["none", "dtmf", "voice", "any"] = "none"
    key: str = Field("1", pattern=r"^[0-9*#]$")
    #: Seconds to wait for the answer; none is a no (the call goes on unrecorded).
    timeout: float = Field(8.0, gt=0, le=60)
    #: Record the call (stereo WAV in `media.recordings_dir`) once consent is given.
    record: bool = True

    @model_validator(mode="after")
    def _what_to_say(self) -> Consent:
        if self.file is not None:
            self.file = _resolve(self.file)
            if not self.file.is_file():
                raise ValueError(f"file: not found: {self.file}")
        if self.say is None and self.file is None:
            raise ValueError("say or file: what the caller is told")
        return self


class Route(Strict):
    """A Request-URI user and the built-in app answering it.

    Apps: `hold` (answer, silence), `echo` (send back what the caller says,
    through the jitter buffer), `playback` (play `file`, then hang up),
    `record` (record the caller to a WAV in `directory`), `dtmf` (log digits).
    """

    app: Literal["hold", "echo", "playback", "record", "dtmf", "agent"] = "hold"
    #: Seconds after answering before we hang up (0: until the caller hangs up).
    duration: float = Field(30.0, ge=0)
    #: Seconds of 180 Ringing before answering.
    ring: float = Field(0.0, ge=0)
    #: `playback`: the WAV file to play (any rate, mono or stereo, 16-bit).
    file: Path | None = None
    #: `record`: where the caller's WAV goes.
    directory: Path = Path("recordings")
    #: Played before answering, as early media (183 Session Progress with SDP,
    #: reliable when the caller supports 100rel): "this call may be recorded".
    announce: Path | None = None
    #: `agent`: the agent answering (prompt, greeting, tools, pipeline overrides).
    agent: AgentConfig | None = None
    #: SRTP for this route's calls (default: `media.srtp`).
    srtp: Literal["off", "optional", "required"] | None = None
    #: `agent`: recording consent before the conversation (see `Consent`).
    consent: Consent | None = None

    @model_validator(mode="after")
    def _app_needs(self) -> Route:
        self.directory = _resolve(self.directory)
        if self.file is not None:
            self.file = _resolve(self.file)
        if self.announce is not None:
            self.announce = _resolve(self.announce)
            if not self.announce.is_file():
                raise ValueError(f"announce: file not found: {self.announce}")
        if self.app == "playback":
            if self.file is None:
                raise ValueError("playback needs `file`")
            if not self.file.is_file():
                raise ValueError(f"file not found: {self.file}")
        if self.app == "agent" and self.agent is None:
            self.agent = AgentConfig()
        return self


class Shutdown(Strict):
    """Graceful drain on SIGTERM."""

    drain_timeout: float = Field(30.0, ge=0)


class Logging(Strict):
    """Log level and format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class Records(Strict):
    """Call records (per call: an append-only timeline, written as it happens)."""

    #: SQLite file (WAL); relative paths are relative to the config file's folder.
    #: null (and no dsn) keeps the recent records in memory only.
    path: Path | None = Path("records/calls.db")
    #: PostgreSQL instead, e.g. "postgresql://user:pass@host/db" (the postgres extra).
    dsn: str | None = None
    #: Which process keeps these records, shown with each call (`mediaserver cluster`
    #: names its workers w0, w1, ...; give each machine's its own prefix).
    worker: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _paths(self) -> Records:
        if self.path is not None:
            self.path = _resolve(self.path)
        if self.dsn:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise ValueError(
                    "dsn: PostgreSQL needs psycopg: pip install 'mediaserver[postgres]'"
                ) from None
        return self


class Admin(Strict):
    """The admin HTTP: /health, /ready, /metrics, /calls, /calls/{id} and the calls page."""

    enabled: bool = True
    #: Loopback by default: the admin API shows what callers said.
    host: str = "127.0.0.1"
    #: 0 picks a free port (logged at start-up as `admin_listening`).
    port: int = Field(8080, ge=0, le=65535)
    #: When set, every route but /health needs `Authorization: Bearer TOKEN`.
    token: str | None = None


class Config(Strict):
    """The whole server configuration."""

    sip: SipSettings = Field(default_factory=SipSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    routes: dict[str, Route] = Field(default_factory=lambda: {"hold": Route()})
    #: Providers that send us calls from known addresses, by name (see `TrunkSettings`).
    trunks: dict[str, TrunkSettings] = Field(default_factory=dict)
    shutdown: Shutdown = Field(default_factory=Shutdown)
    logging: Logging = Field(default_factory=Logging)
    #: The voice-AI pipeline (VAD, turn-taking, barge-in, STT, LLM, TTS) of agent routes.
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    records: Records = Field(default_factory=Records)
    admin: Admin = Field(default_factory=Admin)
    #: Fault injection for tests and demos (off unless `faults.enabled`).
    faults: FaultSettings = Field(default_factory=FaultSettings)

    @model_validator(mode="after")
    def _trunk_routes(self) -> Config:
        if self.sip.auth.invites == "all" and not (self.sip.auth.users or self.trunks):
            raise ValueError("sip.auth.invites: all needs users or trunks")
        for name, trunk in self.trunks.items():
            for number, route in trunk.numbers.items():
                if route not in self.routes:
                    raise ValueError(f"trunks.{name}.numbers.{number}: no route {route!r}")
            if trunk.default_route is not None and trunk.default_route not in self.routes:
                raise ValueError(f"trunks.{name}.default_route: no route {trunk.default_route!r}")
            if trunk.outbound is not None:
                transport = trunk.outbound.where()[2]
                if transport not in {listen.transport for listen in self.sip.listen}:
                    raise ValueError(
                        f"trunks.{name}.outbound.proxy: no {transport} listener in sip.listen"
                    )
        return self

    @model_validator(mode="after")
    def _agent_pipelines(self) -> Config:
        # Validate each agent's overrides now, so a bad key fails at start-up.
        for name, route in self.routes.items():
            if route.agent is not None and route.agent.pipeline:
                agent_pipeline(self.pipeline, route.agent, f"routes.{name}.agent.pipeline")
        return self


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def agent_pipeline(base: PipelineSettings, agent: AgentConfig, where: str) -> PipelineSettings:
    """The pipeline settings of one agent: `base` with the agent's overrides.

    Raises:
        ValueError: an override is invalid (the message names the full key).
    """
    if not agent.pipeline:
        return base
    merged = _merge(base.model_dump(), agent.pipeline)
    try:
        return PipelineSettings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where}.{key}: {err['msg'].removeprefix('Value error, ')}") from None


_base_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("base_dir", default=None)


@contextlib.contextmanager
def _relative_to(base: Path) -> Iterator[None]:
    """Resolve relative paths in the config against its own folder while validating."""
    token = _base_dir.set(base)
    try:
        yield
    finally:
        _base_dir.reset(token)


def _resolve(path: Path) -> Path:
    base = _base_dir.get()
    return path if path.is_absolute() or base is None else base / path


class ConfigError(Exception):
    """A one-line description of what is wrong with the config, naming the key."""


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file.

    Raises:
        ConfigError: unreadable file, bad YAML, or a bad value (the key is named).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        with _relative_to(Path(path).resolve().parent):
            return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a whole-config check; its message names the key itself
            raise ConfigError(f"{path}: {msg}") from None
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {key}: {msg}") from None
