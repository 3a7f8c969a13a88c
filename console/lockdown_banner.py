"""The lockdown banner: stays on screen while lockdown is engaged."""

from __future__ import annotations

from textual.widgets import Static

from keyturn.console.state import Lockdown
from keyturn.console.wording import clock_time

__all__ = ["LockdownBanner"]


class LockdownBanner(Static):
    """Shown (class ``-engaged``) from the moment lockdown is engaged until lifted."""

    def show(self, lockdown: Lockdown, lift_key: str) -> None:
        """Show or hide the banner for a lockdown state."""
        self.set_class(lockdown.engaged, "-engaged")
        if not lockdown.engaged:
            self.update("")
            return
        reason = f": {lockdown.reason}" if lockdown.reason else ""
        self.update(
            f"LOCKDOWN since {clock_time(lockdown.since)} by {lockdown.by}{reason}. "
            "Every grant revoked, new requests refused. "
            f"An admin lifts it ({lift_key})."
        )
