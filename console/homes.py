"""Making a state folder: the configuration and every key pair (``keyturn init``)."""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from pathlib import Path

from keyturn.shared.config import load_config
from keyturn.shared.errors import UsageError
from keyturn.shared.keys import Home, new_signing_key, write_curve_pair

__all__ = ["STANDARD_IDENTITIES", "init_home"]

STANDARD_IDENTITIES = (
    ("admin", "admin"),
    ("oncall", "approver"),
    ("oncall2", "approver"),
    ("auditor", "auditor"),
    ("viewer", "viewer"),
)
"""Identities every new home gets, beside one requester per vendor."""


class HomeExists(Exception):
    """``keyturn init`` never overwrites a home."""


def example_config() -> str:
    """The example configuration shipped with keyturn."""
    return (
        importlib.resources.files("keyturn.config")
        .joinpath("keyturn.toml")
        .read_text("utf-8")
    )


def init_home(root: Path, config: Path | None = None) -> list[str]:
    """Make a home with a configuration, the daemon's keys and one key pair per identity.

    Args:
        root: The folder; must not exist or be empty.
        config: The configuration to start from; the example when None.

    Returns:
        The identities made.

    Raises:
        UsageError: the home exists, or the configuration is invalid.
    """
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(
            f"{root} exists and is not empty; keyturn init never overwrites a home"
        )
    text = config.read_text("utf-8") if config else example_config()
    try:
        vendors = tomllib.loads(text).get("vendors", {})
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{config}: not valid TOML ({exc})") from exc
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    home = Home(root)
    home.keys.mkdir(mode=0o700)
    write_curve_pair(home, "daemon")
    new_signing_key(home)
    identities = [(name, role, "") for name, role in STANDARD_IDENTITIES]
    identities += [(vid, "requester", vid) for vid in vendors]
    tables = [
        _identity_table(name, role, vendor, write_curve_pair(home, name))
        for name, role, vendor in identities
    ]
    home.config.write_text(
        text.rstrip("\n")
        + "\n\n# Identities made by `keyturn init`.\n"
        + "".join(tables),
        "utf-8",
    )
    os.chmod(home.config, 0o600)
    load_config(home.config)
    return [name for name, _, _ in identities]


def _identity_table(name: str, role: str, vendor: str, public_key: str) -> str:
    lines = [f"\n[identities.{name}]", f'role = "{role}"']
    if vendor:
        lines.append(f'vendor = "{vendor}"')
    lines.append(f'public_key = "{public_key}"')
    return "\n".join(lines) + "\n"
