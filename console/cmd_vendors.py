"""Commands of the `keyturn` command line: vendors.

``keyturn vendors import FILE`` appends the vendors of a published
sub-processor list (Markdown or CSV) that the home's configuration lacks, and
``keyturn vendors ls`` shows the configured vendors with the scopes each may
hold. Neither needs the daemon: it re-reads ``keyturn.toml`` when it changes,
so imported vendors are known to it within a moment.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from keyturn.console.cli import EXIT_OK, add_common_options, jsonable
from keyturn.shared.config import Vendor, load_config
from keyturn.shared.durations import format_duration
from keyturn.shared.errors import UsageError
from keyturn.shared.keys import Home, default_home
from keyturn.shared.vendorlist import ImportPlan, VendorListError, import_vendors

__all__ = ["register"]

logger = logging.getLogger(__name__)

_NO_SCOPES = "(none: every request is refused)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``vendors import`` and ``vendors ls`` to the command line."""
    vendors = sub.add_parser("vendors", help="the sub-processors keyturn knows")
    actions = vendors.add_subparsers(dest="vendors_command", required=True)

    p = actions.add_parser(
        "import", help="add the vendors of a published list (Markdown or CSV)"
    )
    p.add_argument("file", help="the list: Markdown bullets or CSV with a header")
    add_common_options(p, identity=False)
    p.set_defaults(func=cmd_import)

    p = actions.add_parser("ls", help="list configured vendors and their scopes")
    add_common_options(p, identity=False)
    p.set_defaults(func=cmd_ls)


def _home(args: argparse.Namespace) -> Home:
    return Home(Path(args.home) if args.home else default_home())


def cmd_import(args: argparse.Namespace) -> int:
    """Import a vendor list into the home's configuration.

    Args:
        args: ``file``, ``home`` and ``json`` from the command line.

    Returns:
        0, also when some lines were not understood (they are reported).

    Raises:
        UsageError: the list or the configuration cannot be read or written.
    """
    home = _home(args)
    if not home.config.exists():
        raise UsageError(f"{home.root} has no keyturn.toml; run `keyturn init` first")
    try:
        plan = import_vendors(home.config, Path(args.file))
    except VendorListError as exc:
        raise UsageError(str(exc)) from exc

    if args.json:
        _print_json(_plan_json(plan))
    else:
        _print_plan(plan, args.file)
    return EXIT_OK


def _plan_json(plan: ImportPlan) -> dict[str, Any]:
    return {
        "added": [asdict(vendor) for vendor in plan.added],
        "skipped": [vendor.id for vendor in plan.skipped],
        "problems": [{"line": line, "problem": what} for line, what in plan.problems],
    }


def _print_plan(plan: ImportPlan, source: str) -> None:
    print(
        f"{source}: {len(plan.added)} added, {len(plan.skipped)} already configured, "
        f"{len(plan.problems)} lines not understood"
    )
    for vendor in plan.added:
        print(f"  added    {vendor.id:<24} {vendor.name} ({vendor.purpose})")
    if plan.skipped:
        print("  already configured: " + ", ".join(v.id for v in plan.skipped))
    for line, what in plan.problems:
        print(f"  line {line}: {what}")
    if plan.added:
        print(
            "Added vendors hold no scopes: add the ones each may request to "
            "keyturn.toml; the daemon reloads it by itself."
        )


def cmd_ls(args: argparse.Namespace) -> int:
    """List the configured vendors with their scopes and durations.

    Args:
        args: ``home`` and ``json`` from the command line.

    Returns:
        0.
    """
    config = load_config(_home(args).config)
    vendors = sorted(config.vendors.values(), key=lambda vendor: vendor.id)
    if args.json:
        _print_json({"vendors": [_vendor_json(vendor) for vendor in vendors]})
        return EXIT_OK

    print(f"{'VENDOR':<24} {'DEFAULT':>7} {'MAX':>7}  SCOPES")
    for vendor in vendors:
        scopes = " ".join(vendor.scopes) or _NO_SCOPES
        default = format_duration(vendor.default_ttl_s)
        print(
            f"{vendor.id:<24} {default:>7} {format_duration(vendor.max_ttl_s):>7}  "
            f"{scopes}"
        )
    return EXIT_OK


def _vendor_json(vendor: Vendor) -> dict[str, Any]:
    return {
        "id": vendor.id,
        "name": vendor.name,
        "purpose": vendor.purpose,
        "location": vendor.location,
        "sources": list(vendor.sources),
        "scopes": list(vendor.scopes),
        "default_ttl_s": vendor.default_ttl_s,
        "max_ttl_s": vendor.max_ttl_s,
    }


def _print_json(value: Any) -> None:
    print(json.dumps(jsonable(value)), flush=True)
