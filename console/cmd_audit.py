"""Commands of the `keyturn` command line: audit, token and keys.

``keyturn audit verify`` walks the journal's hash chain and checkpoint
signatures and names the first record that does not verify; ``keyturn audit
export`` writes every record as JSON lines or CSV. Neither needs the daemon:
both read the state folder's files. ``keyturn token verify`` checks a token
offline with the public signing keys, and with ``--online`` also asks the
daemon whether its grant still stands. ``keyturn keys rotate`` makes a new
signing key; older ones keep verifying what they signed.

Exit status as everywhere: 0 done (verified, valid); 1 the journal or the
token does not verify; 2 bad usage; 3 the daemon is unreachable (``--online``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from keyturn.console.cli import EXIT_OK, EXIT_REFUSED, add_common_options, jsonable
from keyturn.daemon.audit import (
    Bound,
    JournalUnreadable,
    VerifyReport,
    parse_bound,
    read_records,
    select_records,
    verify_home,
    write_csv,
    write_jsonl,
)
from keyturn.shared.client import Client
from keyturn.shared.durations import format_duration
from keyturn.shared.errors import UsageError
from keyturn.shared.keys import Home, default_home, load_verify_keys, new_signing_key
from keyturn.shared.times import rfc3339
from keyturn.shared.tokens import TokenClaims, TokenInvalid, verify_token

__all__ = ["register"]

EXPORT_FORMATS = ("jsonl", "csv")
"""What ``audit export --format`` writes."""
STDIN_TOKEN = "-"
"""``token verify -`` reads the token from standard input, out of the process list."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit``, ``token`` and ``keys`` to the command line."""
    audit = sub.add_parser("audit", help="verify or export the audit journal")
    actions = audit.add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    p = actions.add_parser("verify", help="check the hash chain and every signature")
    add_common_options(p, identity=False)
    p.set_defaults(func=cmd_verify)
    p = actions.add_parser("export", help="every record, as JSON lines or CSV")
    p.add_argument("--since", metavar="SEQ|TIME", help="from this seq or RFC 3339 time")
    p.add_argument("--until", metavar="SEQ|TIME", help="up to this seq or time")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
    add_common_options(p, identity=False, json_out=False)
    p.set_defaults(func=cmd_export)

    token = sub.add_parser("token", help="check a grant token")
    actions = token.add_subparsers(
        dest="token_command", required=True, metavar="ACTION"
    )
    p = actions.add_parser("verify", help="check a token's signature and times")
    p.add_argument("token", help=f"the token, or {STDIN_TOKEN} to read it from stdin")
    p.add_argument(
        "--online", action="store_true", help="also ask the daemon (sees revocation)"
    )
    add_common_options(p)
    p.set_defaults(func=cmd_token_verify)

    keys = sub.add_parser("keys", help="signing keys of tokens and checkpoints")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "rotate", help="make a new signing key; old ones still verify"
    )
    add_common_options(p, identity=False)
    p.set_defaults(func=cmd_keys_rotate)


def _print_json(value: Any) -> None:
    print(json.dumps(jsonable(value)), flush=True)


def _home(args: argparse.Namespace) -> Home:
    home = Home(Path(args.home) if args.home else default_home())
    if not home.config.exists():
        raise UsageError(f"{home.root} is not a keyturn home (no keyturn.toml)")
    return home


# audit verify


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the journal: chain, checkpoints, and the snapshot's seq.

    Args:
        args: ``home`` and ``json`` from the command line.

    Returns:
        0 when every record verifies, 1 naming the first that does not.

    Raises:
        UsageError: there is no home or no journal in it.
    """
    home = _home(args)
    try:
        report = verify_home(home.root)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        _print_json(report.to_json())
    else:
        _print_report(home, report)
    return EXIT_OK if report.ok else EXIT_REFUSED


def _print_report(home: Home, report: VerifyReport) -> None:
    took = f"{report.seconds:.2f}s"
    if report.ok:
        unsigned = (
            f"; {report.unsigned} records after the last checkpoint"
            if report.unsigned
            else ""
        )
        print(
            f"journal ok: {report.records} records, {report.checkpoints} checkpoints "
            f"verified in {took}{unsigned}"
        )
        return
    bad = report.first_bad
    assert bad is not None
    seq = f"seq {bad.seq}" if bad.seq is not None else "the file"
    print(f"journal {home.journal} does NOT verify at {seq} (byte {bad.offset}):")
    print(f"  {bad.problem}")
    print(
        f"  {report.records} records and {report.checkpoints} checkpoints before it "
        f"verified ({took})"
    )


# audit export


def cmd_export(args: argparse.Namespace) -> int:
    """Write every record within the bounds to standard output.

    Args:
        args: ``home``, ``since``, ``until`` and ``format``.

    Returns:
        0, or 1 when the journal has unreadable bytes (what came before is written).

    Raises:
        UsageError: a bound is neither a seq nor an RFC 3339 time, or no journal.
    """
    home = _home(args)
    since, until = _bound(args.since, "--since"), _bound(args.until, "--until")
    if not home.journal.exists():
        raise UsageError(f"{home.journal}: no journal here")
    records = select_records(read_records(home.journal), since, until)
    write = write_csv if args.format == "csv" else write_jsonl
    try:
        write(records, sys.stdout)
        sys.stdout.flush()
    except JournalUnreadable as exc:
        sys.stdout.flush()
        print(f"keyturn: journal: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BrokenPipeError:
        # The reader (head, a closed pipe) has what it wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _bound(text: str | None, flag: str) -> Bound | None:
    if text is None:
        return None
    try:
        return parse_bound(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


# token verify


def cmd_token_verify(args: argparse.Namespace) -> int:
    """Check a token offline, and with ``--online`` also with the daemon.

    Args:
        args: ``token``, ``online``, ``as_``, ``home`` and ``json``.

    Returns:
        0 for a valid token, 1 for an invalid, expired, revoked or released one.

    Raises:
        UsageError: no public signing key in the home.
        KeyturnError: ``--online`` and the daemon is unreachable or refuses.
    """
    home = _home(args)
    token = _read_token(args.token)
    keys = load_verify_keys(home)
    if not keys:
        raise UsageError(f"{home.signing}: no public signing key to verify with")
    out: dict[str, Any] = {"valid": False, "reason": ""}
    try:
        claims = verify_token(token, keys, time.time())
    except TokenInvalid as exc:
        out["reason"] = str(exc)
    else:
        out.update(valid=True, reason="valid", **_claims(claims))
        if args.online:
            with Client.from_home(home.root, args.as_) as client:
                online = client.verify(token)
            out["online"] = online
            out["valid"] = bool(online.get("valid"))
            out["reason"] = str(online.get("reason", ""))
    if args.json:
        _print_json(out)
    else:
        _print_token(out)
    return EXIT_OK if out["valid"] else EXIT_REFUSED


def _read_token(text: str) -> str:
    token = sys.stdin.readline() if text == STDIN_TOKEN else text
    token = token.strip()
    if not token:
        raise UsageError("no token given")
    return token


def _claims(claims: TokenClaims) -> dict[str, Any]:
    return {
        "grant_id": claims.grant_id,
        "vendor": claims.vendor,
        "scopes": list(claims.scopes),
        "issued_at": claims.issued_at,
        "not_before": rfc3339(claims.not_before),
        "expires_at": claims.expires_at,
        "key_id": claims.key_id,
        "remaining_s": round(max(0.0, claims.expires_at - time.time()), 3),
    }


def _print_token(out: dict[str, Any]) -> None:
    if "grant_id" not in out:
        print(f"invalid: {out['reason']}")
        return
    shown = jsonable(out)
    left = format_duration(out["remaining_s"])
    head = "valid" if out["valid"] else f"invalid: {out['reason']}"
    print(
        f"{head}: grant {out['grant_id']} {out['vendor']} {' '.join(out['scopes'])}, "
        f"signed by {out['key_id']}, expires {shown['expires_at']} ({left} left)"
    )


# keys rotate


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Make a new signing key; it signs once the daemon has loaded it.

    Args:
        args: ``home`` and ``json``.

    Returns:
        0.
    """
    home = _home(args)
    key = new_signing_key(home)
    kids = sorted(path.stem.split("-", 1)[-1] for path in home.signing.glob("*.pub"))
    out = {"key_id": key.key_id, "keys": len(kids)}
    if args.json:
        _print_json(out)
        return EXIT_OK
    print(f"new signing key {key.key_id} in {home.signing}")
    print(
        f"the {len(kids) - 1} older key(s) stay, so what they signed still verifies; "
        "a running daemon signs with the new key within a second"
    )
    return EXIT_OK
