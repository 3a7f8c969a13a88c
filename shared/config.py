"""The configuration file, ``keyturn.toml``: loaded, checked, and named in every error.

An invalid file stops the daemon at start with the file, the key and the
problem in one line, for example
``keyturn.toml: vendors.braintree.max_ttl: '3x' is not a duration``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyturn.shared.durations import parse_duration
from keyturn.shared.errors import KeyturnError
from keyturn.shared.model import Role, validate_pattern

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_API",
    "DEFAULT_EVENTS",
    "Config",
    "ConfigError",
    "DaemonSettings",
    "Identity",
    "PolicySettings",
    "Provisioner",
    "Rule",
    "RuleAction",
    "Vendor",
    "load_config",
]

CONFIG_FILE = "keyturn.toml"
"""The configuration's file name inside a home."""

DEFAULT_API = "ipc://{home}/api.sock"
DEFAULT_EVENTS = "ipc://{home}/events.sock"
_Z85_KEY_CHARS = 40


class ConfigError(Exception):
    """The configuration is invalid; the message names file, key and problem."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


@dataclass(frozen=True)
class DaemonSettings:
    """The ``[daemon]`` table."""

    api: str = DEFAULT_API
    """Endpoint of the ROUTER socket; ``{home}`` is replaced by the state folder."""
    events: str = DEFAULT_EVENTS
    """Endpoint of the PUB socket."""
    pending_ttl_s: int = 15 * 60
    """A request still pending after this long expires."""
    checkpoint_every: int = 1000
    """Journal records between two signed checkpoints."""
    checkpoint_interval_s: int = 60
    """A checkpoint at least this often while records arrive."""
    snapshot_interval_s: int = 5
    """Seconds between background snapshots while the state changes."""


RuleAction = str
"""``approve``, ``deny`` or ``review``."""

_ACTIONS = ("approve", "deny", "review")


@dataclass(frozen=True)
class PolicySettings:
    """The ``[policy]`` table."""

    default: RuleAction = "review"
    """What happens when no rule matches: ``review`` or ``deny``."""
    approvals: int = 1
    """Approvals a default review needs."""
    max_ttl_s: int = 24 * 3600
    """No grant lives longer than this, whatever a vendor says."""


@dataclass(frozen=True)
class Vendor:
    """A sub-processor and what it may ever hold."""

    id: str
    name: str
    purpose: str = ""
    location: str = ""
    sources: tuple[str, ...] = ()
    """Published lists the vendor appears on."""
    scopes: tuple[str, ...] = ()
    """Scope patterns the vendor may ever hold; empty means nothing."""
    default_ttl_s: int = 15 * 60
    max_ttl_s: int = 3600
    provisioner: Provisioner | None = None
    """What a grant of this vendor does outside keyturn; None: the token is the access."""


@dataclass(frozen=True)
class Provisioner:
    """A program run when a grant starts and when it ends (``[vendors.X.provisioner]``)."""

    command: tuple[str, ...]
    """The program and its arguments; the action (``grant`` or ``revoke``) is appended."""
    timeout_s: int = 10
    """A run that takes longer is killed and counts as failed."""


@dataclass(frozen=True)
class Rule:
    """One ordered policy rule; the first that matches a request decides it."""

    name: str
    action: RuleAction
    vendors: tuple[str, ...] = ("*",)
    scopes: tuple[str, ...] = ("*:*",)
    max_ttl_s: int | None = None
    """The rule matches only requests up to this duration."""
    approvals: int = 1
    """Distinct approvers a ``review`` needs."""


@dataclass(frozen=True)
class Identity:
    """A key pair's owner and what it may do."""

    name: str
    role: Role
    public_key: str
    """Z85 CurveZMQ public key."""
    vendor: str = ""
    """The vendor a requester acts for."""


@dataclass(frozen=True)
class Config:
    """The whole configuration, checked."""

    path: Path
    daemon: DaemonSettings
    policy: PolicySettings
    vendors: dict[str, Vendor]
    rules: tuple[Rule, ...]
    identities: dict[str, Identity]
    by_key: dict[str, Identity] = field(repr=False)
    """Identities by public key."""

    def endpoint(self, which: str, home: Path) -> str:
        """Return the ``api`` or ``events`` endpoint with ``{home}`` filled in."""
        template = self.daemon.api if which == "api" else self.daemon.events
        return template.replace("{home}", str(home))


def load_config(path: Path) -> Config:
    """Read and check a configuration file.

    Raises:
        ConfigError: naming the file, the key and the problem.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(path, "", "no such file; run `keyturn init` first") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"is not valid TOML ({exc})") from exc
    return _Loader(path, raw).load()


class _Loader:
    """Walks the TOML document, checking each key and naming it on failure."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path.name if self.path else "", key, problem)

    def load(self) -> Config:
        self.known(self.raw, "", {"daemon", "policy", "vendors", "rules", "identities"})
        daemon = self.daemon(self.table(self.raw, "daemon"))
        policy = self.policy(self.table(self.raw, "policy"))
        vendors = {
            vid: self.vendor(vid, self.table(self.raw["vendors"], vid, "vendors."))
            for vid in self.table(self.raw, "vendors")
        }
        rules = tuple(
            self.rule(i, item, vendors) for i, item in enumerate(self.rules_list())
        )
        identities = {
            name: self.identity(
                name, self.table(self.raw["identities"], name, "identities.")
            )
            for name in self.table(self.raw, "identities")
        }
        by_key: dict[str, Identity] = {}
        for ident in identities.values():
            if ident.vendor and ident.vendor not in vendors:
                raise self.fail(
                    f"identities.{ident.name}.vendor",
                    f"unknown vendor {ident.vendor!r}",
                )
            if ident.public_key in by_key:
                raise self.fail(
                    f"identities.{ident.name}.public_key",
                    f"the same key as identity {by_key[ident.public_key].name!r}",
                )
            by_key[ident.public_key] = ident
        return Config(self.path, daemon, policy, vendors, rules, identities, by_key)

    def known(self, table: dict[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(
                    prefix + key, f"unknown key (expected one of {sorted(allowed)})"
                )

    def table(
        self, parent: dict[str, Any], key: str, prefix: str = ""
    ) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(prefix + key, "must be a table")
        return value

    def get(
        self, table: dict[str, Any], key: str, kind: type, where: str, default: Any
    ) -> Any:
        value = table.get(key, default)
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(where + key, f"must be a {kind.__name__}")
        if not isinstance(value, kind):
            raise self.fail(where + key, f"must be a {kind.__name__}")
        return value

    def duration(
        self, table: dict[str, Any], key: str, where: str, default: int
    ) -> int:
        if key not in table:
            return default
        try:
            return parse_duration(table[key])
        except KeyturnError as exc:
            raise self.fail(
                where + key, f"{table[key]!r} is not a duration ({exc.message})"
            ) from exc

    def patterns(
        self, table: dict[str, Any], key: str, where: str, default: list[str]
    ) -> tuple[str, ...]:
        value = self.get(table, key, list, where, default)
        try:
            return tuple(
                validate_pattern(item) if isinstance(item, str) else _bad(item)
                for item in value
            )
        except ValueError as exc:
            raise self.fail(where + key, str(exc)) from exc

    def daemon(self, table: dict[str, Any]) -> DaemonSettings:
        where = "daemon."
        self.known(
            table,
            where,
            {
                "api",
                "events",
                "pending_ttl",
                "checkpoint_every",
                "checkpoint_interval",
                "snapshot_interval",
            },
        )
        settings = DaemonSettings(
            api=self.endpoint(table, "api", DEFAULT_API),
            events=self.endpoint(table, "events", DEFAULT_EVENTS),
            pending_ttl_s=self.duration(table, "pending_ttl", where, 15 * 60),
            checkpoint_every=self.get(table, "checkpoint_every", int, where, 1000),
            checkpoint_interval_s=self.duration(
                table, "checkpoint_interval", where, 60
            ),
            snapshot_interval_s=self.duration(table, "snapshot_interval", where, 5),
        )
        if settings.checkpoint_every < 1:
            raise self.fail(where + "checkpoint_every", "must be at least 1")
        return settings

    def endpoint(self, table: dict[str, Any], key: str, default: str) -> str:
        value = self.get(table, key, str, "daemon.", default)
        if not value.startswith(("ipc://", "tcp://")):
            raise self.fail(
                "daemon." + key, f"{value!r} must start with ipc:// or tcp://"
            )
        return str(value)

    def policy(self, table: dict[str, Any]) -> PolicySettings:
        where = "policy."
        self.known(table, where, {"default", "approvals", "max_ttl"})
        default = self.get(table, "default", str, where, "review")
        if default not in ("review", "deny"):
            raise self.fail(where + "default", "must be 'review' or 'deny'")
        approvals = self.get(table, "approvals", int, where, 1)
        if approvals < 1:
            raise self.fail(where + "approvals", "must be at least 1")
        return PolicySettings(
            default, approvals, self.duration(table, "max_ttl", where, 24 * 3600)
        )

    def vendor(self, vid: str, table: dict[str, Any]) -> Vendor:
        where = f"vendors.{vid}."
        self.known(
            table,
            where,
            {
                "name",
                "purpose",
                "location",
                "sources",
                "scopes",
                "default_ttl",
                "max_ttl",
                "link",
                "provisioner",
            },
        )
        if (
            not vid
            or vid != vid.lower()
            or not all(c.isalnum() or c == "-" for c in vid)
        ):
            raise self.fail(
                f"vendors.{vid}", "a vendor id is lower-case letters, digits and '-'"
            )
        vendor = Vendor(
            id=vid,
            name=self.get(table, "name", str, where, vid),
            purpose=self.get(table, "purpose", str, where, ""),
            location=self.get(table, "location", str, where, ""),
            sources=tuple(self.get(table, "sources", list, where, [])),
            scopes=self.patterns(table, "scopes", where, []),
            default_ttl_s=self.duration(table, "default_ttl", where, 15 * 60),
            max_ttl_s=self.duration(table, "max_ttl", where, 3600),
            provisioner=self.provisioner(table, where),
        )
        if vendor.default_ttl_s > vendor.max_ttl_s:
            raise self.fail(where + "default_ttl", "is longer than max_ttl")
        return vendor

    def provisioner(self, vendor: dict[str, Any], where: str) -> Provisioner | None:
        if "provisioner" not in vendor:
            return None
        table = self.table(vendor, "provisioner", where)
        where = where + "provisioner."
        self.known(table, where, {"kind", "command", "timeout"})
        kind = self.get(table, "kind", str, where, "command")
        if kind == "token":
            return None
        if kind != "command":
            raise self.fail(where + "kind", "must be 'token' or 'command'")
        command = self.get(table, "command", list, where, [])
        if not command or not all(isinstance(part, str) and part for part in command):
            raise self.fail(
                where + "command",
                "must be a non-empty list of strings (program and arguments)",
            )
        return Provisioner(tuple(command), self.duration(table, "timeout", where, 10))

    def rules_list(self) -> list[Any]:
        value = self.raw.get("rules", [])
        if not isinstance(value, list):
            raise self.fail("rules", "must be an array of tables ([[rules]])")
        return value

    def rule(self, index: int, table: Any, vendors: dict[str, Vendor]) -> Rule:
        where = f"rules[{index}]."
        if not isinstance(table, dict):
            raise self.fail(f"rules[{index}]", "must be a table")
        self.known(
            table,
            where,
            {"name", "action", "vendors", "scopes", "max_ttl", "approvals"},
        )
        action = self.get(table, "action", str, where, "")
        if action not in _ACTIONS:
            raise self.fail(where + "action", f"must be one of {list(_ACTIONS)}")
        names = tuple(self.get(table, "vendors", list, where, ["*"]))
        for vid in names:
            if vid != "*" and vid not in vendors:
                raise self.fail(where + "vendors", f"unknown vendor {vid!r}")
        approvals = self.get(table, "approvals", int, where, 1)
        if approvals < 1:
            raise self.fail(where + "approvals", "must be at least 1")
        max_ttl = (
            self.duration(table, "max_ttl", where, 0) if "max_ttl" in table else None
        )
        return Rule(
            name=self.get(table, "name", str, where, f"rule-{index}"),
            action=action,
            vendors=names,
            scopes=self.patterns(table, "scopes", where, ["*:*"]),
            max_ttl_s=max_ttl,
            approvals=approvals,
        )

    def identity(self, name: str, table: dict[str, Any]) -> Identity:
        where = f"identities.{name}."
        self.known(table, where, {"role", "public_key", "vendor"})
        try:
            role = Role(self.get(table, "role", str, where, ""))
        except ValueError as exc:
            raise self.fail(
                where + "role", f"must be one of {[r.value for r in Role]}"
            ) from exc
        key = self.get(table, "public_key", str, where, "")
        if len(key) != _Z85_KEY_CHARS:
            raise self.fail(
                where + "public_key", "must be a 40-character Z85 CurveZMQ public key"
            )
        vendor = self.get(table, "vendor", str, where, "")
        if (role is Role.REQUESTER) != bool(vendor):
            raise self.fail(
                where + "vendor",
                "a requester names exactly one vendor; other roles none",
            )
        return Identity(name, role, key, vendor)


def _bad(item: object) -> str:
    raise ValueError(f"{item!r} is not a string")
