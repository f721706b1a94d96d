"""`mediaserver dial`: ask a running server (its admin HTTP) to place a call."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

from mediaserver.config import ConfigError, load_config

__all__ = ["dial"]

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
