"""The sorted index behind the tables stays right after every change."""

from __future__ import annotations

import random
from dataclasses import dataclass

from keyturn.console.index import BULK_REMOVE_MIN, CHUNK_SIZE, SortedIndex, SortedKeys


@dataclass(frozen=True)
class Item:
    name: str
    rank: float


def make_index() -> SortedIndex[Item]:
    orders = {
        "rank": lambda item: (item.rank,),
        "name": lambda item: (item.name, item.rank),
    }
    return SortedIndex(orders, lambda item: item.name, "rank")


def shown(index: SortedIndex[Item]) -> list[str]:
    return index.ids(0, len(index))


def test_rows_come_out_in_sort_order_with_ties_by_id() -> None:
    """Rows are listed by sort key, equal keys by id, whatever the insert order."""
    index = make_index()
    for row_id, rank in (("c", 2.0), ("a", 1.0), ("b", 2.0), ("d", 0.5)):
        index.put(row_id, Item(row_id, rank))

    assert shown(index) == ["d", "a", "b", "c"]
    index.descending = True
    assert shown(index) == ["c", "b", "a", "d"]
    assert index.position_of("d", Item("d", 0.5)) == 3


def test_a_changed_key_moves_the_row_in_every_order() -> None:
    """Extending a grant moves it to where its new expiry sorts, in every order."""
    index = make_index()
    items = {f"r{n}": Item(f"n{n}", float(n)) for n in range(5)}
    for row_id, item in items.items():
        index.put(row_id, item)

    index.put("r0", Item("n9", 10.0), items["r0"])

    assert shown(index) == ["r1", "r2", "r3", "r4", "r0"]
    index.set_order("name")
    assert shown(index) == ["r1", "r2", "r3", "r4", "r0"]
    assert index.total == 5


def test_switching_order_keeps_every_row() -> None:
    """Sorting by another column shows the same rows in that column's order."""
    index = make_index()
    items = {f"r{n}": Item(f"name{9 - n}", float(n)) for n in range(10)}
    index.rebuild(items)
    assert shown(index) == [f"r{n}" for n in range(10)]

    index.set_order("name")

    assert index.order == "name"
    assert shown(index) == [f"r{n}" for n in reversed(range(10))]


def test_filter_follows_changes_and_order() -> None:
    """A filter keeps matching rows only, also for rows added or renamed later."""
    index = make_index()
    a = Item("braintree payments:read", 1.0)
    index.put("a", a)
    index.put("b", Item("segment events:write", 2.0))
    index.set_filter("  PAY ")

    assert shown(index) == ["a"]
    index.put("c", Item("braintree payments:refund", 0.5))
    index.put(
        "b", Item("segment payments:read", 2.0), Item("segment events:write", 2.0)
    )
    assert shown(index) == ["c", "a", "b"]
    index.put("a", Item("stripe charges:read", 1.0), a)
    assert shown(index) == ["c", "b"]
    assert index.position_of("a", Item("stripe charges:read", 1.0)) is None
    index.set_order("name")
    assert shown(index) == ["c", "b"]

    index.set_filter("")
    assert shown(index) == ["c", "b", "a"]


def test_remove_many_uses_one_pass_and_keeps_order() -> None:
    """Sweeping thousands of ended grants at once leaves the others in order."""
    index = make_index()
    count = BULK_REMOVE_MIN * 4
    items = {f"r{n:05d}": Item(f"r{n}", float(n % 97)) for n in range(count)}
    for row_id, item in items.items():
        index.put(row_id, item)
    index.set_filter("r1")
    gone = [(row_id, items[row_id]) for row_id in list(items)[::2]]

    index.remove_many(gone)

    assert index.total == count // 2
    assert all(row_id not in index for row_id, _ in gone)
    index.set_filter("")
    keys = [(items[row_id].rank, row_id) for row_id in shown(index)]
    assert keys == sorted(keys)


def test_chunked_list_splits_and_merges() -> None:
    """The chunked list stays sorted and indexable across splits and emptied chunks."""
    keys = SortedKeys()
    values = list(range(CHUNK_SIZE * 5))
    random.Random(3).shuffle(values)
    for value in values:
        keys.add((value,))
    assert [keys[i][0] for i in range(len(keys))] == sorted(values)
    for value in range(CHUNK_SIZE * 3):
        assert keys.discard((value,))
    assert not keys.discard((0,))
    assert len(keys) == CHUNK_SIZE * 2
    assert keys.index((CHUNK_SIZE * 3,)) == 0
    assert keys[len(keys) - 1] == (CHUNK_SIZE * 5 - 1,)


def test_random_changes_match_a_full_sort() -> None:
    """After any mix of puts and removes the index equals sorting from scratch."""
    rng = random.Random(7)
    index = make_index()
    truth: dict[str, Item] = {}
    for _ in range(5000):
        row_id = f"r{rng.randrange(2000)}"
        old = truth.get(row_id)
        if rng.random() < 0.3:
            if old is not None:
                index.remove(row_id, old)
                del truth[row_id]
            continue
        item = Item(f"n{rng.randrange(5)}", float(rng.randrange(50)))
        index.put(row_id, item, old)
        truth[row_id] = item
    index.set_filter("n3")

    expected = sorted(
        (item.rank, row_id) for row_id, item in truth.items() if "n3" in item.name
    )
    assert shown(index) == [row_id for _, row_id in expected]
    for position, (_, row_id) in enumerate(expected):
        assert index.position_of(row_id, truth[row_id]) == position
