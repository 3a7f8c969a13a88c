"""The ``keyturn`` command line: a contract that scripts rely on.

Exit status: 0 done; 1 refused by the daemon (policy, not found, forbidden,
lockdown); 2 bad usage or input; 3 daemon unreachable. Every command takes
``--home DIR`` (or ``KEYTURN_HOME``) and none hangs: an unreachable daemon is
reported within five seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from keyturn.shared.client import Client, Subscriber
from keyturn.shared.config import ConfigError
from keyturn.shared.durations import format_duration, parse_duration
from keyturn.shared.errors import Category, KeyturnError, UsageError
from keyturn.shared.keys import KeyFileError, default_home
from keyturn.shared.times import rfc3339

__all__ = [
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "add_common_options",
    "jsonable",
    "main",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
WAIT_POLL_S = 0.2
"""How often ``request --wait`` asks whether the request was decided."""

_EXIT_BY_CATEGORY = {
    Category.BAD_INPUT: EXIT_USAGE,
    Category.REFUSED: EXIT_REFUSED,
    Category.UNREACHABLE: EXIT_UNREACHABLE,
    Category.INTERNAL: EXIT_REFUSED,
}


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home) if args.home else default_home()


def _client(args: argparse.Namespace) -> Client:
    return Client.from_home(_home(args), getattr(args, "as_", "admin") or "admin")


def jsonable(value: Any) -> Any:
    """Make a wire value printable as JSON: times as RFC 3339, bytes as hex."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (
                key.endswith("_at")
                and isinstance(item, int | float)
                and not isinstance(item, bool)
            ):
                out[key] = rfc3339(item) if item else None
            else:
                out[key] = jsonable(item)
        return out
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(jsonable(value), sort_keys=False), flush=True)


def _remaining(grant: dict[str, Any], now: float) -> float:
    if grant.get("state") not in ("active", "revoking"):
        return 0.0
    left: float = grant["expires_at"] - now
    return max(0.0, round(left, 3))


def _grant_row(grant: dict[str, Any], now: float) -> dict[str, Any]:
    row: dict[str, Any] = jsonable(grant)
    row["remaining_s"] = _remaining(grant, now)
    return row


# Commands that talk to the daemon.


def cmd_request(args: argparse.Namespace) -> int:
    """Ask for access; with --wait, wait for the decision."""
    parse_duration(args.ttl, what="--ttl")
    if args.wait is not None and args.wait < 0:
        raise UsageError("--wait must be zero or more seconds")
    with _client(args) as client:
        try:
            result = client.request(
                args.vendor,
                args.scopes,
                ttl=args.ttl,
                reason=args.reason,
                ticket=args.ticket,
            )
        except KeyturnError as exc:
            if exc.code == "policy_denied":
                return _denied(args, exc)
            raise
        if result["request"]["state"] == "pending" and args.wait:
            result = _wait_decision(client, result["request"]["request_id"], args.wait)
    return _show_request(args, result)


def _denied(args: argparse.Namespace, exc: KeyturnError) -> int:
    out = {
        "request_id": exc.details.get("request_id", ""),
        "state": "denied",
        "reason": exc.message,
    }
    if args.json:
        _print_json(out)
    else:
        print(f"denied: {exc.message} (request {out['request_id']})")
    return EXIT_REFUSED


def _wait_decision(client: Client, request_id: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    result = client.get(request_id)
    while result["request"]["state"] == "pending" and time.monotonic() < deadline:
        time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))
        result = client.get(request_id)
    return result


def _show_request(args: argparse.Namespace, result: dict[str, Any]) -> int:
    request = result["request"]
    grant = result.get("grant")
    state = "active" if grant and grant["state"] == "active" else request["state"]
    if grant and state != "active":
        state = grant["state"]
    out: dict[str, Any] = {
        "request_id": request["request_id"],
        "state": state,
        "vendor": request["vendor"],
        "scopes": request["scopes"],
        "ttl_s": request["ttl_s"],
    }
    if grant:
        out.update(
            grant_id=grant["grant_id"],
            expires_at=grant["expires_at"],
            token=result.get("token", ""),
        )
    elif request["state"] == "pending":
        out.update(
            approvals_needed=request["approvals_needed"],
            pending_until=request["expires_at"],
        )
    if args.json:
        out["pending_until"] = (
            rfc3339(out["pending_until"]) if "pending_until" in out else None
        )
        _print_json({k: v for k, v in out.items() if v is not None})
    else:
        _print_request_human(out, grant)
    return EXIT_OK if state in ("active", "pending") else EXIT_REFUSED


def _print_request_human(out: dict[str, Any], grant: dict[str, Any] | None) -> None:
    scopes = " ".join(out["scopes"])
    if grant:
        left = format_duration(grant["expires_at"] - time.time())
        print(
            f"{out['state']}: grant {out['grant_id']} {out['vendor']} {scopes}, {left} left"
        )
        if out.get("token"):
            print(f"token: {out['token']}")
    else:
        print(f"{out['state']}: request {out['request_id']} {out['vendor']} {scopes}")


def _simple(
    op: str, build: Callable[[argparse.Namespace], dict[str, Any]]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            result = client.call(op, build(args))
        if args.json:
            _print_json(result)
        else:
            _print_human(op, result)
        return EXIT_OK

    run.__doc__ = f"Send the {op} op."
    return run


def _print_human(op: str, result: dict[str, Any]) -> None:
    if "grant" in result:
        grant = result["grant"]
        extra = " (capped at the maximum)" if result.get("capped") else ""
        when = f"expires {rfc3339(grant['expires_at'])}"
        if grant["state"] not in ("active", "revoking"):
            when = f"ended {rfc3339(grant['ended_at'])}"
        print(
            f"{op}: grant {grant['grant_id']} {grant['vendor']} is {grant['state']}, {when}{extra}"
        )
    elif "request" in result:
        request = result["request"]
        print(
            f"{op}: request {request['request_id']} {request['vendor']} is {request['state']}"
        )
    elif op == "lockdown":
        print(
            f"lockdown engaged: {result['revoked']} grants revoked, "
            f"{result['denied']} requests denied"
        )
    elif op == "lift":
        print("lockdown lifted")


def cmd_ls(args: argparse.Namespace) -> int:
    """List grants and requests."""
    with _client(args) as client:
        result = client.list(all=args.all, vendor=args.vendor or "")
    now = result.get("now", time.time())
    grants = [
        _grant_row(g, now)
        for g in sorted(result["grants"], key=lambda g: g["expires_at"])
    ]
    requests = [
        jsonable(r) for r in sorted(result["requests"], key=lambda r: r["requested_at"])
    ]
    if args.json:
        _print_json({"grants": grants, "requests": requests})
        return EXIT_OK
    print(f"{'GRANT':<17} {'VENDOR':<22} {'STATE':<9} {'LEFT':>8}  SCOPES")
    for g in grants:
        print(
            f"{g['grant_id']:<17} {g['vendor']:<22} {g['state']:<9} "
            f"{format_duration(g['remaining_s']):>8}  {' '.join(g['scopes'])}"
        )
    print(f"\n{'REQUEST':<17} {'VENDOR':<22} {'STATE':<9} {'BY':<12} SCOPES")
    for r in requests:
        print(
            f"{r['request_id']:<17} {r['vendor']:<22} {r['state']:<9} "
            f"{r['requested_by']:<12} {' '.join(r['scopes'])}"
        )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Show whether the daemon is reachable, its seq, counts and lockdown."""
    try:
        with _client(args) as client:
            result = client.status()
    except KeyturnError as exc:
        if exc.category is not Category.UNREACHABLE:
            raise
        if args.json:
            _print_json({"reachable": False, "error": exc.message})
        else:
            print(f"unreachable: {exc.message}")
        return EXIT_UNREACHABLE
    result["reachable"] = True
    if args.json:
        _print_json(result)
        return EXIT_OK
    counts = result["counts"]
    lock = result["lockdown"]
    print(
        f"reachable: seq {result['seq']}, {counts['active']} active, {counts['pending']} pending, "
        f"{counts['revoking']} revoking; you are {result['identity']} ({result['role']})"
    )
    print(
        f"lockdown: ENGAGED by {lock['by']} ({lock['reason']})"
        if lock["engaged"]
        else "lockdown: off"
    )
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Print events, one a line, until interrupted."""
    with _client(args) as client:
        client.status()  # fails fast, with exit 3, when the daemon is not there
    with Subscriber.from_home(_home(args), args.as_) as sub:
        try:
            while True:
                event = sub.recv(timeout_s=1.0)
                if event is None or (
                    event.get("type") == "daemon.heartbeat" and not args.heartbeats
                ):
                    continue
                _print_event(args, event)
        except KeyboardInterrupt:
            return EXIT_OK


def _print_event(args: argparse.Namespace, event: dict[str, Any]) -> None:
    event.pop("prev", None)
    for kind in ("grant", "request"):
        if isinstance(event.get(kind), dict):
            event.setdefault(f"{kind}_id", event[kind].get(f"{kind}_id"))
            event.setdefault("vendor", event[kind].get("vendor"))
    if args.json:
        _print_json(event)
        return
    subject = event.get("grant_id") or event.get("request_id") or ""
    print(
        f"{rfc3339(event.get('at', 0))} #{event.get('seq', '-')} {event['type']} {subject} "
        f"{event.get('vendor') or ''} by {event.get('actor', '-')}",
        flush=True,
    )


# Commands that need no daemon.


def cmd_init(args: argparse.Namespace) -> int:
    """Make a home: configuration and keys."""
    from keyturn.console.homes import init_home

    home = _home(args)
    made = init_home(home, Path(args.config) if args.config else None)
    print(
        f"made keyturn home {home}: {len(made)} identities ({', '.join(made[:4])}, ...)"
    )
    print(f"next: keyturn daemon --home {home}")
    return EXIT_OK


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from keyturn.daemon.server import Daemon, StartupError

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    daemon = Daemon(_home(args))
    try:
        daemon.start()
    except StartupError as exc:
        print(f"keyturn daemon: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    daemon.run()
    return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    """Run the operator console."""
    from keyturn.console.app import run_console

    return run_console(_home(args), args.as_)


# The parser.


def add_common_options(
    parser: argparse.ArgumentParser, *, identity: bool = True, json_out: bool = True
) -> None:
    """Add ``--home`` and, as asked, ``--as NAME`` and ``--json`` to a command."""
    parser.add_argument(
        "--home",
        default=None,
        help="state folder (default: $KEYTURN_HOME or ~/.local/state/keyturn)",
    )
    if identity:
        parser.add_argument(
            "--as",
            dest="as_",
            default="admin",
            metavar="NAME",
            help="act as this identity (default: admin)",
        )
    if json_out:
        parser.add_argument(
            "--json", action="store_true", help="print JSON for scripts"
        )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="keyturn", description="Just-in-time access for sub-processors."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="make a home: configuration and keys")
    add_common_options(p, identity=False, json_out=False)
    p.add_argument(
        "--config", help="configuration to start from (default: the example)"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("daemon", help="run the daemon in the foreground")
    add_common_options(p, identity=False, json_out=False)
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("console", help="the operator console")
    add_common_options(p, json_out=False)
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("request", help="ask for access for a vendor")
    p.add_argument("vendor")
    p.add_argument("scopes", nargs="+", metavar="SCOPE")
    p.add_argument("--ttl", required=True, help="how long, e.g. 15m")
    p.add_argument("--reason", required=True)
    p.add_argument("--ticket", default="")
    p.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for a decision",
    )
    add_common_options(p)
    p.set_defaults(func=cmd_request)

    def add(
        name: str,
        help_text: str,
        build: Callable[[argparse.Namespace], dict[str, Any]],
        *extra: tuple[Sequence[str], dict[str, Any]],
    ) -> None:
        sp = sub.add_parser(name, help=help_text)
        for flags, options in extra:
            sp.add_argument(*flags, **options)
        add_common_options(sp)
        sp.set_defaults(func=_simple(name, build))

    add(
        "approve",
        "approve a pending request",
        lambda a: {"request_id": a.request_id},
        (["request_id"], {}),
    )
    add(
        "deny",
        "deny a pending request",
        lambda a: {"request_id": a.request_id, "reason": a.reason},
        (["request_id"], {}),
        (["--reason"], {"required": True}),
    )
    add(
        "cancel",
        "withdraw your pending request",
        lambda a: {"request_id": a.request_id},
        (["request_id"], {}),
    )
    add(
        "revoke",
        "end a grant now",
        lambda a: {"grant_id": a.grant_id, "reason": a.reason},
        (["grant_id"], {}),
        (["--reason"], {"default": ""}),
    )
    add(
        "force",
        "close a grant stuck in revoking without its provisioner (admin)",
        lambda a: {"grant_id": a.grant_id, "reason": a.reason},
        (["grant_id"], {}),
        (["--reason"], {"required": True}),
    )
    add(
        "release",
        "give a grant back early",
        lambda a: {"grant_id": a.grant_id},
        (["grant_id"], {}),
    )
    add(
        "extend",
        "lengthen a grant",
        lambda a: {"grant_id": a.grant_id, "by": _checked_duration(a.by, "--by")},
        (["grant_id"], {}),
        (["--by"], {"required": True}),
    )
    add(
        "lockdown",
        "revoke everything and refuse new grants",
        lambda a: {"reason": a.reason},
        (["--reason"], {"required": True}),
    )
    add(
        "lift",
        "end a lockdown",
        lambda a: {"reason": a.reason},
        (["--reason"], {"default": ""}),
    )

    p = sub.add_parser("ls", help="list grants and requests")
    p.add_argument("--all", action="store_true", help="also recently ended ones")
    p.add_argument("--vendor", default="")
    add_common_options(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("watch", help="print events as they happen")
    p.add_argument("--heartbeats", action="store_true", help="also print heartbeats")
    add_common_options(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("status", help="is the daemon there, and how is it")
    add_common_options(p)
    p.set_defaults(func=cmd_status)
    for module in _PLUGINS:
        importlib.import_module(module).register(sub)
    return parser


_PLUGINS = (
    "keyturn.console.cmd_audit",
    "keyturn.console.cmd_vendors",
    "keyturn.console.cmd_simulate",
)
"""Modules that add commands: each has ``register(subparsers)``."""


def _checked_duration(text: str, flag: str) -> str:
    parse_duration(text, what=flag)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    wants_json = getattr(args, "json", False)
    if args.command != "daemon":
        logging.basicConfig(
            level=logging.WARNING, format="keyturn: warning: %(message)s"
        )
    try:
        return int(args.func(args))
    except KeyturnError as exc:
        return _fail(wants_json, exc.code, exc.message, _EXIT_BY_CATEGORY[exc.category])
    except (ConfigError, KeyFileError) as exc:
        return _fail(wants_json, "usage", str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`keyturn ls | head`): not an error of ours.
        sys.stderr.close()
        return EXIT_OK


def _fail(wants_json: bool, code: str, message: str, status: int) -> int:
    if wants_json:
        _print_json({"error": {"code": code, "message": message}})
    print(f"keyturn: {code}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
