"""Commands of the `keyturn` command line: simulate and demo.

``keyturn simulate`` sends demo traffic to a running daemon: each configured
vendor asks for access as its own identity, through the public client, the way
a vendor's tooling would. Most requests are ones the rules approve at once,
some wait for an approver, now and then one asks for an ``:admin`` scope and
is denied, and some grants are given back early. Durations are short (10 s to
45 s) so that grants visibly expire while one watches.

``keyturn demo`` runs the daemon, this traffic and the console together; see
:mod:`keyturn.console.demo`.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from keyturn.console.cli import EXIT_OK
from keyturn.daemon.policy import check_request, decide
from keyturn.shared.client import Client
from keyturn.shared.config import Config, Vendor, load_config
from keyturn.shared.durations import parse_duration
from keyturn.shared.errors import KeyturnError, Refused, Unreachable, UsageError
from keyturn.shared.keys import Home, default_home

__all__ = ["Simulator", "register"]

logger = logging.getLogger(__name__)

DEFAULT_RATE_PER_S = 1.0
"""Requests a second unless ``--rate`` says otherwise."""
MAX_RATE_PER_S = 1000.0
"""A higher rate is a typo; the daemon's own benchmark is the place for load."""
MIN_TTL_S = 10
MAX_TTL_S = 45
"""Demo grants live between these, so they expire within a minute."""
PENDING_GIVE_UP_S = 60.0
"""A vendor withdraws its request when nobody decided it within this long."""
RELEASE_MIN_LEFT_S = 3.0
"""Only grants with at least this long left are given back early."""
CALL_TIMEOUT_S = 3.0
"""How long one call waits for the daemon before it counts as gone."""
RECONNECT_WAIT_S = 1.0
"""Pause between attempts to reach a daemon that went away."""
JITTER = 0.5
"""Each pause is the mean pause times a factor in [1 - JITTER, 1 + JITTER]."""
TICKET_PREFIXES = ("INC", "SUP", "CHG", "OPS")
TICKET_NUMBERS = (1000, 9999)


class Kind(Enum):
    """What one step of the simulation does."""

    AUTO = "auto"
    """A request the rules approve at once."""
    REVIEW = "review"
    """A request that waits for an approver."""
    DENY = "deny"
    """A request the rules deny (an ``:admin`` scope)."""
    RELEASE = "release"
    """A grant given back before it expires."""


DECK = (Kind.AUTO,) * 13 + (Kind.REVIEW,) * 4 + (Kind.DENY,) + (Kind.RELEASE,) * 2
"""One round of steps, shuffled: every twenty steps hold each kind in this mix."""

REASONS: dict[str, tuple[str, ...]] = {
    "payments": (
        "Reconcile yesterday's settlement report",
        "Look into a disputed charge",
    ),
    "storage": ("Restore a customer's deleted attachment", "Check last night's backup"),
    "compute": ("Diagnose slow background jobs", "Restart a stuck worker pool"),
    "logs": ("Trace failed webhook deliveries", "Review logs for an outage report"),
    "cloud": ("Change account-wide settings",),
    "contacts": ("Fix a contact that stopped syncing", "Verify an unsubscribe request"),
    "email": ("Find out why receipts bounce", "Send a corrected notice"),
    "campaigns": ("Check a newsletter's audience",),
    "tickets": ("Answer an escalated support ticket", "Merge duplicate tickets"),
    "errors": ("Triage an error spike after the deploy", "Close fixed error groups"),
    "orders": ("Recalculate tax on corrected invoices",),
    "tax": ("Recalculate tax on corrected invoices", "File the quarterly return"),
    "sms": ("Investigate undelivered sign-in codes", "Send an outage notice"),
    "integrations": ("Repair a broken integration", "Replay failed automation runs"),
    "documents": ("Find a signed contract for legal",),
    "signatures": ("Resend a contract for signature",),
    "analytics": ("Prepare the monthly traffic report", "Tag a new landing page"),
    "prompts": ("Evaluate draft replies to support tickets",),
    "completions": ("Generate summaries of support threads",),
}
"""Plausible reasons by a scope's resource."""
GENERIC_REASONS = ("Customer-reported issue", "Scheduled maintenance")


@dataclass(frozen=True)
class Ask:
    """Scopes one vendor asks for, and how policy decides them."""

    vendor: str
    scopes: tuple[str, ...]
    kind: Kind
    max_ttl_s: int
    """Longest duration this ask uses; policy decides it as ``kind`` up to there."""


@dataclass
class Tally:
    """What the simulation did, for the summary line."""

    active: int = 0
    pending: int = 0
    denied: int = 0
    released: int = 0
    withdrawn: int = 0
    refused: int = 0

    def line(self) -> str:
        """The counts in one line."""
        return ", ".join(f"{count} {name}" for name, count in vars(self).items())


@dataclass
class _Made:
    """A grant or pending request the simulation made and still follows."""

    vendor: str
    object_id: str
    at: float
    """Expiry for a grant, creation for a request (wall clock)."""


def build_catalogue(config: Config, home: Home) -> list[Ask]:
    """List what each vendor with a requester key may plausibly ask for.

    Args:
        config: The home's configuration.
        home: The home, to find which vendors have a key pair.

    Returns:
        One ask per concrete scope of every vendor whose identity has a key,
        plus, where a vendor has several scopes approved at once, all of them
        together.
    """
    asks: list[Ask] = []
    for vendor in config.vendors.values():
        if not home.secret_key(vendor.id).exists():
            continue
        singles = [_classify(config, vendor, (scope,)) for scope in _concrete(vendor)]
        asks += [ask for ask in singles if ask is not None]
        auto = tuple(a.scopes[0] for a in singles if a and a.kind is Kind.AUTO)
        if len(auto) > 1 and (together := _classify(config, vendor, auto)):
            asks.append(together)
    return asks


def _concrete(vendor: Vendor) -> list[str]:
    return [scope for scope in vendor.scopes if "*" not in scope]


def _classify(config: Config, vendor: Vendor, scopes: tuple[str, ...]) -> Ask | None:
    ttl_s = min(MAX_TTL_S, vendor.max_ttl_s, config.policy.max_ttl_s)
    if ttl_s < MIN_TTL_S:
        return None
    try:
        checked_vendor, clean = check_request(config, vendor.id, list(scopes), ttl_s)
    except KeyturnError:
        return None
    action = decide(config, checked_vendor, clean, ttl_s).action
    kinds = {"approve": Kind.AUTO, "review": Kind.REVIEW, "deny": Kind.DENY}
    return Ask(vendor.id, clean, kinds[action], ttl_s)


class Simulator:
    """Sends demo traffic to one daemon until told to stop.

    Args:
        home: The daemon's home; vendor keys are read from ``home/keys``.
        rate_per_s: Mean steps a second.
        seed: Seed for the random choices; None for a different run each time.
        out: Where one line per step is printed.
    """

    def __init__(
        self, home: Path, rate_per_s: float, seed: int | None, out: TextIO
    ) -> None:
        self.home = Home(home)
        self.rate_per_s = rate_per_s
        self.out = out
        self.tally = Tally()
        self.stop = threading.Event()
        self._random = random.Random(seed)
        self._asks = build_catalogue(load_config(self.home.config), self.home)
        self._clients: dict[str, Client] = {}
        self._grants: list[_Made] = []
        self._pending: list[_Made] = []
        self._deck: Iterator[Kind] = iter(())
        if not self._asks:
            raise UsageError(f"no vendor in {self.home.config} has a requester key")

    def run(self, duration_s: float | None) -> Tally:
        """Take steps until ``stop`` is set or the duration has passed.

        Args:
            duration_s: How long to run; None for until stopped.

        Returns:
            What was done.
        """
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.stop.is_set() and (end is None or time.monotonic() < end):
                self._step_safely(next(self._deck, None) or self._new_deck())
                self._pause(end)
        finally:
            self.close()
        return self.tally

    def close(self) -> None:
        """Close every client connection."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _new_deck(self) -> Kind:
        cards = list(DECK)
        self._random.shuffle(cards)
        self._deck = iter(cards)
        return next(self._deck)

    def _pause(self, end: float | None) -> None:
        factor = self._random.uniform(1 - JITTER, 1 + JITTER)
        wait = factor / self.rate_per_s
        if end is not None:
            wait = min(wait, max(0.0, end - time.monotonic()))
        self.stop.wait(wait)

    def _step_safely(self, kind: Kind) -> None:
        try:
            self._withdraw_stale()
            self._step(kind)
        except Unreachable as exc:
            self._wait_for_daemon(str(exc))
        except KeyturnError as exc:
            self.tally.refused += 1
            self._say(f"refused: {exc}")

    def _step(self, kind: Kind) -> None:
        if kind is Kind.RELEASE and self._release_one():
            return
        if kind is Kind.RELEASE:
            kind = Kind.AUTO
        choices = [ask for ask in self._asks if ask.kind is kind]
        if choices:
            self._ask(self._random.choice(choices))

    def _ask(self, ask: Ask) -> None:
        ttl_s = self._random.randint(MIN_TTL_S, max(MIN_TTL_S, ask.max_ttl_s))
        reason = self._reason(ask.scopes)
        words = f"{ask.vendor} {' '.join(ask.scopes)} {ttl_s}s"
        try:
            result = self._client(ask.vendor).request(
                ask.vendor,
                list(ask.scopes),
                ttl=ttl_s,
                reason=reason,
                ticket=self._ticket(),
            )
        except Refused as exc:
            if exc.code != "policy_denied":
                raise
            self.tally.denied += 1
            self._say(f"{words}: denied ({exc.message})")
            return
        self._record(ask.vendor, result, words)

    def _record(self, vendor: str, result: dict[str, Any], words: str) -> None:
        grant = result.get("grant")
        if grant:
            self._grants.append(_Made(vendor, grant["grant_id"], grant["expires_at"]))
            self.tally.active += 1
            self._say(f"{words}: active, grant {grant['grant_id']}")
            return
        request = result["request"]
        self._pending.append(_Made(vendor, request["request_id"], time.time()))
        self.tally.pending += 1
        self._say(f"{words}: pending approval, request {request['request_id']}")

    def _release_one(self) -> bool:
        now = time.time()
        self._grants = [g for g in self._grants if g.at - now > RELEASE_MIN_LEFT_S]
        if not self._grants:
            return False
        made = self._grants.pop(self._random.randrange(len(self._grants)))
        try:
            self._client(made.vendor).release(made.object_id)
        except Refused:
            return False
        self.tally.released += 1
        self._say(f"{made.vendor}: released grant {made.object_id} early")
        return True

    def _withdraw_stale(self) -> None:
        cutoff = time.time() - PENDING_GIVE_UP_S
        while self._pending and self._pending[0].at < cutoff:
            made = self._pending.pop(0)
            try:
                self._client(made.vendor).cancel(made.object_id)
            except Refused:
                continue  # decided or expired meanwhile: nothing to withdraw
            self.tally.withdrawn += 1
            self._say(f"{made.vendor}: withdrew request {made.object_id}, undecided")

    def _client(self, vendor: str) -> Client:
        if vendor not in self._clients:
            self._clients[vendor] = Client.from_home(
                self.home.root, vendor, timeout_s=CALL_TIMEOUT_S
            )
        return self._clients[vendor]

    def _wait_for_daemon(self, why: str) -> None:
        """Drop connections and wait until the daemon answers again, or stop."""
        self.close()
        self._say(f"daemon not answering ({why}); waiting for it")
        vendor = self._asks[0].vendor
        while not self.stop.wait(RECONNECT_WAIT_S):
            try:
                self._client(vendor).status()
            except Unreachable:
                self.close()
                continue
            self._say("daemon is back")
            return

    def _reason(self, scopes: tuple[str, ...]) -> str:
        resource = scopes[0].split(":", 1)[0]
        return self._random.choice(REASONS.get(resource, GENERIC_REASONS))

    def _ticket(self) -> str:
        prefix = self._random.choice(TICKET_PREFIXES)
        return f"{prefix}-{self._random.randint(*TICKET_NUMBERS)}"

    def _say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        print(f"{stamp} {text}", file=self.out, flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` and ``demo`` to the command line."""
    p = sub.add_parser("simulate", help="send demo traffic from the vendors")
    p.add_argument(
        "--home",
        default=None,
        help="state folder (default: $KEYTURN_HOME or ~/.local/state/keyturn)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE_PER_S,
        metavar="R",
        help=f"requests a second (default: {DEFAULT_RATE_PER_S:g})",
    )
    p.add_argument(
        "--duration",
        default=None,
        metavar="D",
        help="stop after this long, e.g. 30s or 5m (default: until interrupted)",
    )
    p.add_argument("--seed", type=int, default=None, metavar="N")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "demo", help="daemon, demo traffic and the console together, in one go"
    )
    p.add_argument(
        "--home",
        default=None,
        help="state folder (default: a demo home beside the usual one)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Send demo traffic until interrupted or the duration has passed."""
    if not 0 < args.rate <= MAX_RATE_PER_S:
        raise UsageError(f"--rate must be above 0 and at most {MAX_RATE_PER_S:g}")
    duration_s = _duration(args.duration)
    home = Path(args.home) if args.home else default_home()
    simulator = Simulator(home, args.rate, args.seed, sys.stdout)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # The handler runs in the main thread, possibly inside stop.wait(), which
        # holds the event's lock: setting it here would deadlock. A thread sets it.
        threading.Thread(target=simulator.stop.set, daemon=True).start()

    previous = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        tally = simulator.run(duration_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"simulated: {tally.line()}", flush=True)
    return EXIT_OK


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return float(parse_duration(text, what="--duration"))
    if seconds <= 0:
        raise UsageError("--duration must be longer than zero")
    return seconds


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the daemon, demo traffic and the console; stop all on quitting."""
    from keyturn.console.demo import demo_home, run_demo

    return run_demo(Path(args.home) if args.home else demo_home())
