"""The sequencer: no record missed, none applied twice, a new snapshot when in doubt."""

from __future__ import annotations

from typing import Any

from keyturn.console.sync import Sequencer, Verdict


def record(seq: int, kind: str = "grant.active") -> dict[str, Any]:
    return {"seq": seq, "type": kind, "at": 0.0, "actor": "test"}


def beat(seq: int, boot_id: str = "boot-1") -> dict[str, Any]:
    return {"type": "daemon.heartbeat", "seq": seq, "boot_id": boot_id, "at": 0.0}


def synced(seq: int = 10, boot_id: str = "boot-1") -> Sequencer:
    sequencer = Sequencer()
    sequencer.on_snapshot(seq, boot_id)
    return sequencer


def test_records_before_the_snapshot_are_held_then_filtered() -> None:
    """Records from before the snapshot apply only if it lacks them (C-07)."""
    sequencer = Sequencer()
    verdicts = [sequencer.on_record(record(seq)) for seq in (9, 10, 11, 12)]
    assert verdicts == [Verdict.HOLD] * 4

    ready, again = sequencer.on_snapshot(10, "boot-1")

    assert [r["seq"] for r in ready] == [11, 12]
    assert not again
    assert sequencer.seq == 12


def test_next_record_applies_and_old_ones_drop() -> None:
    """Each record is applied exactly once, in order."""
    sequencer = synced(10)

    assert sequencer.on_record(record(11)) is Verdict.APPLY
    assert sequencer.on_record(record(11)) is Verdict.DROP
    assert sequencer.on_record(record(5)) is Verdict.DROP
    assert sequencer.on_record(record(12)) is Verdict.APPLY
    assert sequencer.seq == 12


def test_a_gap_asks_for_a_new_snapshot() -> None:
    """A skipped seq (a publisher drop) triggers a resync instead of a silent hole."""
    sequencer = synced(10)

    assert sequencer.on_record(record(12)) is Verdict.RESYNC
    assert not sequencer.synced


def test_a_gap_among_held_records_asks_again() -> None:
    """Held records with a hole after the snapshot still lead to a resync."""
    sequencer = Sequencer()
    for seq in (11, 13):
        sequencer.on_record(record(seq))

    ready, again = sequencer.on_snapshot(10, "boot-1")

    assert ready == []
    assert again
    assert not sequencer.synced


def test_new_boot_in_heartbeat_asks_for_a_snapshot() -> None:
    """A daemon restart (new boot id) replaces the copy: no ghost grants."""
    sequencer = synced(10, "boot-1")

    assert sequencer.on_heartbeat(beat(10, "boot-1")) is Verdict.DROP
    assert sequencer.on_heartbeat(beat(10, "boot-2")) is Verdict.RESYNC
    assert not sequencer.synced


def test_heartbeat_ahead_gets_one_beat_of_grace() -> None:
    """A heartbeat may overtake a record; still missing a beat later is a loss."""
    sequencer = synced(10)

    assert sequencer.on_heartbeat(beat(11)) is Verdict.DROP
    assert sequencer.on_record(record(11)) is Verdict.APPLY
    assert sequencer.on_heartbeat(beat(11)) is Verdict.DROP

    assert sequencer.on_heartbeat(beat(14)) is Verdict.DROP
    assert sequencer.on_heartbeat(beat(14)) is Verdict.RESYNC


def test_lost_subscription_start_is_caught_by_heartbeat() -> None:
    """Records sent before the subscription took hold are noticed (C-07)."""
    sequencer = synced(3)

    sequencer.on_heartbeat(beat(8))

    assert sequencer.on_heartbeat(beat(8)) is Verdict.RESYNC


def test_non_records_are_dropped() -> None:
    """Frames without an integer seq are ignored, never applied."""
    sequencer = synced(1)

    assert sequencer.on_record({"type": "grant.active"}) is Verdict.DROP
    assert sequencer.on_record({"seq": True, "type": "x"}) is Verdict.DROP
    assert sequencer.on_record({"seq": "2", "type": "x"}) is Verdict.DROP


def test_held_records_are_bounded() -> None:
    """Held records are bounded; the overflow shows up as a gap."""
    sequencer = Sequencer(max_held=3)
    for seq in range(1, 10):
        sequencer.on_record(record(seq))

    ready, again = sequencer.on_snapshot(0, "boot-1")

    assert [r["seq"] for r in ready] == [1, 2, 3]
    assert not again
    assert sequencer.on_record(record(10)) is Verdict.RESYNC
