"""`mediaserver dial` and `mediaserver campaign`: ask a running server (its admin
HTTP) to place a call, or to call a CSV list."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mediaserver.config import ConfigError, load_config

__all__ = ["campaign", "dial"]

#: Seconds between looks at the call while `--wait` follows it, and the longest wait.
POLL = 0.5
MAX_WAIT = 4 * 3600.0


def _admin(args: argparse.Namespace) -> tuple[str, str | None]:
    """The admin base URL and token from the options, the environment or the config."""
    token = args.token or os.environ.get("MEDIASERVER_ADMIN_TOKEN")
    if args.admin:
        return args.admin.rstrip("/"), token
    host, port = "127.0.0.1", 8080
    if args.config:
        admin = load_config(args.config).admin
        if admin.port == 0:
            raise ConfigError("admin.port: 0 (a free port): pass --admin with the port it logged")
        host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host
        port, token = admin.port, token or admin.token
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}", token


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"to": args.to, "route": args.agent}
    for name in ("caller_id", "caller_name", "ring_timeout", "idempotency_key", "webhook", "amd"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    variables: dict[str, Any] = {}
    for item in args.var:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--var {item!r}: KEY=VALUE")
        try:
            variables[key] = json.loads(value)  # numbers, true/false, JSON objects
        except ValueError:
            variables[key] = value
    if variables:
        body["variables"] = variables
    return body


def dial(args: argparse.Namespace) -> int:
    """Place the call; print its id (and with --wait its outcome). Exit 0 when the
    call was placed (with --wait: when it was answered)."""
    try:
        base, token = _admin(args)
        body = _body(args)
    except (ConfigError, ValueError) as exc:
        print(f"dial error: {exc}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base, headers=headers, timeout=10.0, trust_env=False) as client:
        try:
            response = client.post("/calls", json=body)
        except httpx.HTTPError as exc:
            print(f"dial error: no server at {base}: {exc}", file=sys.stderr)
            return 1
        answer = response.json() if response.content else {}
        if not response.is_success:
            why = answer.get("error", response.reason_phrase)
            print(f"dial error: {response.status_code} {why}", file=sys.stderr)
            return 1
        print(json.dumps(answer))
        if not args.wait:
            return 0
        return _follow(client, answer["id"])


def _follow(client: httpx.Client, call: str) -> int:
    """Print the call's outbound progress until it ends; 0 when it was answered."""
    seen = 0
    deadline = time.monotonic() + MAX_WAIT
    while time.monotonic() < deadline:
        try:
            record = client.get(f"/calls/{call}").json()
        except (httpx.HTTPError, ValueError):
            time.sleep(POLL)
            continue
        steps = [e["data"] for e in record.get("events", []) if e.get("kind") == "outbound"]
        for step in steps[seen:]:
            print(json.dumps(step))
            if step.get("event") == "ended":
                return 0 if step.get("outcome") == "completed" else 1
        seen = len(steps)
        time.sleep(POLL)
    return 1


def campaign(args: argparse.Namespace) -> int:
    """Start a campaign from a CSV file; print it (its id, state and counts)."""
    try:
        base, token = _admin(args)
        body: dict[str, Any] = {
            "name": args.name or Path(args.csv).stem,
            "route": args.agent,
            "csv": Path(args.csv).read_text(encoding="utf-8"),
            "max_concurrent": args.concurrency,
            "cps": args.cps,
            "retries": _retries(args.retry),
        }
        if args.quiet_hours:
            start, _, end = args.quiet_hours.partition("-")
            body["quiet_hours"] = {"start": start, "end": end}
        for name in ("timezone", "caller_id", "amd"):
            if getattr(args, name) is not None:
                body[name] = getattr(args, name)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"campaign error: {exc}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(
            f"{base}/campaigns", json=body, headers=headers, timeout=30.0, trust_env=False
        )
    except httpx.HTTPError as exc:
        print(f"campaign error: no server at {base}: {exc}", file=sys.stderr)
        return 1
    answer = response.json() if response.content else {}
    if not response.is_success:
        print(f"campaign error: {response.status_code} {answer.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


def _retries(items: list[str]) -> dict[str, Any]:
    """`busy=2x300` -> {"busy": {"attempts": 2, "delay": 300}}."""
    out: dict[str, Any] = {}
    for item in items:
        outcome, _, rule = item.partition("=")
        count, _, delay = rule.partition("x")
        if not (outcome and count.isdigit() and delay.replace(".", "", 1).isdigit()):
            raise ValueError(f"--retry {item!r}: OUTCOME=NxSECONDS, e.g. busy=2x300")
        out[outcome] = {"attempts": int(count), "delay": float(delay)}
    return out
