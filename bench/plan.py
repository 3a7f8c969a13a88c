"""How much each measurement does: the full run and the quick one."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["FULL", "QUICK", "Plan"]


@dataclass(frozen=True)
class Plan:
    """Counts, durations and repeats for one benchmark run."""

    quick: bool
    repeats: int
    """Repeats of each short measurement (round trips, throughput, starts)."""
    long_repeats: int
    """Repeats of each long one (expiry windows, storms)."""
    floor_samples: int
    """Echo round trips and fsyncs per repeat."""
    rt_levels: tuple[int, ...]
    """Active grants before each round-trip measurement."""
    rt_samples: int
    """Sequential grant round trips per repeat."""
    client_rt_samples: int
    """Round trips through ``keyturn.shared.client.Client`` per level."""
    clients: int
    """Concurrent DEALER sockets for throughput and loading."""
    window: int
    """Requests each client keeps in flight."""
    throughput_s: float
    """Length of one throughput run."""
    expiry_grants: int
    """Active grants whose deadlines are spread over the window."""
    expiry_window_s: float
    storm_grants: int
    """Grants that share one deadline."""
    recovery_grants: int
    """Active grants in the recovery journal."""
    recovery_records: int
    """Records in the recovery journal."""
    grace_s: float
    """How long a subscriber waits after the last deadline before giving up."""
    lead_pad_s: float
    """Time before the first deadline beyond what loading should take."""


FULL = Plan(
    quick=False,
    repeats=3,
    long_repeats=2,
    floor_samples=2000,
    rt_levels=(0, 10_000, 100_000),
    rt_samples=1000,
    client_rt_samples=500,
    clients=16,
    window=8,
    throughput_s=5.0,
    expiry_grants=100_000,
    expiry_window_s=60.0,
    storm_grants=100_000,
    recovery_grants=100_000,
    recovery_records=1_000_000,
    grace_s=15.0,
    lead_pad_s=2.0,
)

QUICK = replace(
    FULL,
    quick=True,
    repeats=2,
    long_repeats=1,
    floor_samples=300,
    rt_levels=(0, 1_000, 3_000),
    rt_samples=200,
    client_rt_samples=100,
    throughput_s=0.7,
    expiry_grants=2_000,
    expiry_window_s=2.0,
    storm_grants=2_000,
    recovery_grants=2_000,
    recovery_records=20_000,
    grace_s=4.0,
    lead_pad_s=0.8,
)
