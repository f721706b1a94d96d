"""Tests for mediaserver.observability.admin: every route over real HTTP on 127.0.0.1.

Each test runs its own event loop (``asyncio.run``) with an AdminServer on a
free port and a FakeSource; well-formed requests go through httpx, malformed
ones through raw asyncio streams. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from mediaserver.observability.admin import MAX_HEAD_BYTES, AdminServer
from mediaserver.observability.metrics import Metrics
from tests.observability import FakeSource, serving, summary

TIMEOUT = 5.0


def run(main: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    """Run one test body in a fresh event loop, bounded in time."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


def client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, trust_env=False, **kwargs)


async def raw(base: str, data: bytes, *, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes, read the answer up to EOF (the server closes after each response)."""
    parts = urlsplit(base)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port), timeout
    )
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0].decode()
    assert line.startswith("HTTP/1.1 "), line
    return int(line.split()[1])


def headers_of(response: bytes) -> dict[str, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def detailed_source() -> FakeSource:
    live = [summary("c-live", ended_at=None, end_reason=None, ended_by=None, turns=1)]
    recent = [summary(f"c{i}", turns=i) for i in range(600)]
    detail = summary("c1", turns=1) | {
        "events": [
            {"seq": 1, "t": 1_714_564_800.1, "kind": "sip", "data": {"event": "incoming"}},
            {"seq": 2, "t": 1_714_564_801.0, "kind": "turn", "data": {"turn": 1}},
        ],
        "final_state": {"state": "ended"},
    }
    odd = summary("a b/c@x%y", turns=0) | {"events": [], "final_state": None}
    metrics = Metrics()
    metrics.call_started()
    metrics.turn({"voice_to_voice_ms": 900.0})
    return FakeSource(
        live=live,
        recent=recent,
        details={"c1": detail, "a b/c@x%y": odd},
        metrics=metrics.render(),
    )


# ---------------------------------------------------------------- routes


def test_health_and_ready() -> None:
    source = FakeSource()

    async def main() -> None:
        async with serving(source) as (_, base), client(base_url=base) as http:
            r = await http.get("/health")
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            assert r.headers["connection"] == "close"
            assert r.json() == {"status": "ok"}

            r = await http.get("/ready")
            assert (r.status_code, r.json()) == (200, {"status": "ready"})
            source.is_ready = False
            r = await http.get("/ready")
            assert (r.status_code, r.json()) == (503, {"status": "draining"})
            # Liveness does not depend on readiness.
            assert (await http.get("/health")).status_code == 200
            source.is_ready = True
            assert (await http.get("/ready")).status_code == 200

    run(main)


def test_start_returns_bound_port_and_close_stops_serving() -> None:
    async def main() -> None:
        server = AdminServer(FakeSource(), host="127.0.0.1", port=0)
        host, port = await server.start()
        assert host == "127.0.0.1" and port > 0
        assert server.address == (host, port)
        async with client() as http:
            assert (await http.get(f"http://{host}:{port}/health")).status_code == 200
        await server.close()
        await server.close()  # idempotent
        with pytest.raises(OSError):
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
            writer.close()

    run(main)


def test_metrics_route_serves_the_exposition() -> None:
    source = detailed_source()

    async def main() -> None:
        async with serving(source) as (_, base), client(base_url=base) as http:
            r = await http.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"] == Metrics.CONTENT_TYPE
            families = {f.name: f for f in text_string_to_metric_families(r.text)}
            assert families["mediaserver_calls"].samples[0].value == 1
            count = [
                s.value
                for s in families["mediaserver_turn_voice_to_voice_seconds"].samples
                if s.name.endswith("_count")
            ]
            assert count == [1]

    run(main)


def test_calls_list_and_limit() -> None:
    source = detailed_source()

    async def main() -> None:
        async with serving(source) as (_, base), client(base_url=base) as http:
            r = await http.get("/calls")
            assert r.status_code == 200
            body = r.json()
            assert [c["id"] for c in body["live"]] == ["c-live"]
            assert body["live"][0]["ended_at"] is None
            assert len(body["recent"]) == 50
            assert body["recent"][0] == summary("c0", turns=0)
            assert source.limits[-1] == 50

            r = await http.get("/calls", params={"limit": "3"})
            assert [c["id"] for c in r.json()["recent"]] == ["c0", "c1", "c2"]
            assert source.limits[-1] == 3

            r = await http.get("/calls", params={"limit": "100000"})
            assert len(r.json()["recent"]) == 500
            assert source.limits[-1] == 500

            for bad in ("abc", "-1", "1.5"):
                r = await http.get("/calls", params={"limit": bad})
                assert r.status_code == 400, bad
                assert "limit" in r.json()["error"]

    run(main)


def test_call_detail_and_404() -> None:
    source = detailed_source()

    async def main() -> None:
        async with serving(source) as (_, base), client(base_url=base) as http:
            r = await http.get("/calls/c1")
            assert r.status_code == 200
            detail = r.json()
            assert detail["id"] == "c1"
            assert [e["kind"] for e in detail["events"]] == ["sip", "turn"]
            assert detail["final_state"] == {"state": "ended"}

            # Ids are percent-decoded, slashes included.
            r = await http.get("/calls/" + quote("a b/c@x%y", safe=""))
            assert r.status_code == 200
            assert r.json()["id"] == "a b/c@x%y"
            assert source.asked[-1] == "a b/c@x%y"

            r = await http.get("/calls/nope")
            assert r.status_code == 404
            assert r.json() == {"error": "no such call"}

    run(main)


def test_registrations_route() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as (_, base), client(base_url=base) as http:
            r = await http.get("/registrations")
            assert r.status_code == 200
            assert r.json()["alice"][0]["contact"] == "sip:alice@127.0.0.1:5070"

    run(main)


def test_trunks_route() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as (_, base), client(base_url=base) as http:
            r = await http.get("/trunks")
            assert r.status_code == 200
            assert r.json()["carrier"]["allow"] == ["198.51.100.0/28"]

    run(main)


def test_calls_page_served_as_html() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as (_, base), client(base_url=base) as http:
            for path in ("/", "/calls.html", "/?call=c1", "/calls.html?call=c1"):
                r = await http.get(path)
                assert r.status_code == 200, path
                assert r.headers["content-type"].startswith("text/html")
                assert "default-src 'none'" in r.headers["content-security-policy"]
                assert "<!DOCTYPE html>" in r.text
                assert 'id="waterfall"' in r.text
            head = await http.head("/")
            assert head.status_code == 200
            assert head.content == b""
            assert int(head.headers["content-length"]) == len(r.content)

    run(main)


def test_unknown_paths_404() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as (_, base), client(base_url=base) as http:
            for path in ("/nope", "/calls/", "/static/calls.html", "/health/x", "/../etc/passwd"):
                r = await http.get(path)
                assert r.status_code == 404, path
                assert r.json() == {"error": "not found"}

    run(main)


def test_non_ascii_and_nan_values_are_valid_json() -> None:
    source = FakeSource(live=[summary("c", caller="Zoë ☎", started_at=float("nan"))])

    async def main() -> None:
        async with serving(source) as (_, base), client(base_url=base) as http:
            r = await http.get("/calls")
            assert r.status_code == 200
            live = json.loads(r.content.decode("utf-8"))["live"][0]  # strict JSON: no NaN
            assert live["caller"] == "Zoë ☎"
            assert live["started_at"] is None

    run(main)


# ---------------------------------------------------------------- protocol


def test_methods_a_path_does_not_take_are_405() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as (_, base), client(base_url=base) as http:
            for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
                r = await http.request(method, "/calls", content=b"x" * 1000)
                assert r.status_code == 405, method
                assert r.headers["allow"] == "GET, HEAD, POST"
            for method in ("POST", "PUT"):
                r = await http.request(method, "/calls/c1", content=b"x")
                assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, DELETE"
            # A larger body we never read must not reset the connection before the answer.
            r = await http.post("/health", content=b"y" * 200_000)
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"

    run(main)


def test_malformed_requests_are_400() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as (_, base):
            for data in (
                b"GARBAGE\r\n\r\n",
                b"GET /health\r\n\r\n",  # no version
                b"GET  /health HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET health HTTP/1.1\r\nHost: x\r\n\r\n",  # not origin-form
                b"GET /health HTTP/1.1\r\nHost x\r\n\r\n",  # header without colon
                b"GET /health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  # obsolete folding
                b"GET /health HTTP/1.1\r\nBad Name: x\r\nHost: x\r\n\r\n",
                b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS hello-ish
            ):
                response = await raw(base, data)
                assert status_of(response) == 400, data
                assert headers_of(response)["connection"] == "close"
                assert "error" in json.loads(body_of(response))
            # A garbage request line is answered at once, without waiting for headers.
            response = await raw(base, b"NOT HTTP AT ALL\r\n", timeout=2.0)
            assert status_of(response) == 400
            # HTTP/2 preface-ish versions are refused.
            response = await raw(base, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")
            assert status_of(response) == 505
            # A well-formed raw request works, bare LFs included.
            response = await raw(base, b"GET /health HTTP/1.0\n\n")
            assert status_of(response) == 200
            assert json.loads(body_of(response)) == {"status": "ok"}

    run(main)


def test_oversized_request_head_is_431() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as (_, base):
            big = (
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
            )
            response = await raw(base, big)
            assert status_of(response) == 431
            # Many small headers add up too; and no blank line ever comes.
            many = b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 3000
            response = await raw(base, many)
            assert status_of(response) == 431
            # Just under the limit is fine.
            pad = MAX_HEAD_BYTES - 200
            ok = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n"
            assert status_of(await raw(base, ok)) == 200

    run(main)


def test_slow_client_is_cut_off() -> None:
    async def main() -> None:
        async with serving(FakeSource(), read_timeout=0.3) as (_, base):
            parts = urlsplit(base)
            assert parts.port is not None
            # Half a request, then nothing: 408 and the connection closes.
            started = time.monotonic()
            response = await raw(base, b"GET /health HTTP/1.1\r\nHost: x\r\n", timeout=3.0)
            assert status_of(response) == 408
            assert time.monotonic() - started < 2.5
            # A connection that never sends a byte is closed without an answer.
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port), TIMEOUT
            )
            try:
                assert await asyncio.wait_for(reader.read(), 3.0) == b""
            finally:
                writer.close()

    run(main)


# ---------------------------------------------------------------- auth


def test_token_required_except_health() -> None:
    source = detailed_source()
    token = "s3cret-token"

    async def main() -> None:
        async with serving(source, token=token) as (_, base), client(base_url=base) as http:
            assert (await http.get("/health")).status_code == 200
            for path in ("/ready", "/metrics", "/calls", "/calls/c1", "/", "/calls.html", "/nope"):
                r = await http.get(path)
                assert r.status_code == 401, path
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert r.json() == {"error": "unauthorized"}
            # Wrong tokens.
            bad = {"Authorization": "Bearer nope"}
            assert (await http.get("/calls", headers=bad)).status_code == 401
            assert (await http.get("/calls", params={"token": "nope"})).status_code == 401
            assert (await http.get("/calls", params={"token": ""})).status_code == 401
            basic = {"Authorization": f"Basic {token}"}
            assert (await http.get("/calls", headers=basic)).status_code == 401
            # The header, any case of the scheme.
            for scheme in ("Bearer", "bearer"):
                auth = {"Authorization": f"{scheme} {token}"}
                r = await http.get("/calls", headers=auth)
                assert r.status_code == 200, scheme
                assert r.json()["live"][0]["id"] == "c-live"
            # The query parameter (what the calls page is opened with).
            for path in ("/calls", "/calls/c1", "/", "/metrics", "/ready"):
                r = await http.get(path, params={"token": token})
                assert r.status_code == 200, path
            r = await http.get("/calls", params={"token": token, "limit": "2"})
            assert len(r.json()["recent"]) == 2
            # 404 and 405 still answer after authentication.
            r = await http.get("/calls/nope", params={"token": token})
            assert r.status_code == 404

    run(main)


# ---------------------------------------------------------------- failures


def test_raising_source_is_500_and_server_keeps_serving() -> None:
    source = detailed_source()

    async def main() -> None:
        async with serving(source) as (_, base), client(base_url=base) as http:
            for method, path in (
                ("ready", "/ready"),
                ("metrics_text", "/metrics"),
                ("live_calls", "/calls"),
                ("recent_calls", "/calls"),
                ("call_detail", "/calls/c1"),
            ):
                source.fail = {method}
                with capture_logs() as logs:
                    r = await http.get(path)
                assert r.status_code == 500, method
                assert r.json() == {"error": "internal error"}
                failures = [e for e in logs if e["event"] == "admin_source_failed"]
                assert failures and failures[0]["path"] == path
                assert failures[0]["log_level"] == "error"
                source.fail = set()
                assert (await http.get(path)).status_code == 200, method
            assert (await http.get("/health")).status_code == 200

    run(main)


def test_many_concurrent_clients() -> None:
    source = detailed_source()

    async def main() -> None:
        async with serving(source) as (_, base), client(base_url=base) as http:
            results = await asyncio.gather(*(http.get("/calls/c1") for _ in range(40)))
            assert [r.status_code for r in results] == [200] * 40

    run(main)


def test_post_calls_places_a_call_and_delete_ends_one() -> None:
    async def main() -> None:
        source = FakeSource()
        async with serving(source) as (_, base), client(base_url=base) as http:
            r = await http.post(
                "/calls", json={"to": "sip:bob@x", "route": "r"}, headers={"Idempotency-Key": "k1"}
            )
            assert r.status_code == 201 and r.json()["id"] == "out-1"
            assert source.dialed == [({"to": "sip:bob@x", "route": "r"}, "k1")]
            source.dial_answer = (503, {"error": "at sip.max_calls", "retry_after": 7})
            r = await http.post("/calls", json={"to": "sip:bob@x", "route": "r"})
            assert r.status_code == 503 and r.headers["retry-after"] == "7"
            assert (await http.delete("/calls/out-1")).status_code == 202
            assert (await http.delete("/calls/nope")).status_code == 404
            assert source.ended == ["out-1", "nope"]

    run(main)


def test_post_calls_bad_bodies() -> None:
    async def main() -> None:
        source = FakeSource()
        async with serving(source, read_timeout=1.0) as (_, base), client(base_url=base) as http:
            assert (await http.post("/calls", content=b"{not json")).status_code == 400
            r = await http.post("/calls", content=b"x", headers={"Content-Type": "text/plain"})
            assert r.status_code == 415
            assert (await http.post("/calls", content=b"x" * 70_000)).status_code == 413
            no_length = b"POST /calls HTTP/1.1\r\nHost: x\r\n\r\n"
            assert status_of(await raw(base, no_length)) == 411
            chunked = (
                b"POST /calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            assert status_of(await raw(base, chunked)) == 411
            # A body that never comes in full: 408, not a held connection.
            short = b"POST /calls HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"
            assert status_of(await raw(base, short, timeout=10)) == 408
        assert source.dialed == []

    run(main)


def test_placing_calls_beyond_loopback_needs_a_token() -> None:
    async def main() -> None:
        source = FakeSource()
        server = AdminServer(source, "0.0.0.0", 0, None, read_timeout=2.0)
        _, port = await server.start()
        try:
            async with client(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/calls")).status_code == 200  # reading stays open
                r = await http.post("/calls", json={"to": "sip:bob@x", "route": "r"})
                assert r.status_code == 403 and "token" in r.json()["error"]
                assert (await http.delete("/calls/c1")).status_code == 403
        finally:
            await server.close()
        assert source.dialed == [] and source.ended == []

    run(main)
