"""The error codes the code can emit are exactly the documented ones."""

from __future__ import annotations

import re
from pathlib import Path

from keyturn.shared.errors import ERROR_CODES

ROOT = Path(__file__).resolve().parents[2]


def _codes_in_source() -> set[str]:
    pattern = re.compile(r'(?:BadInput|Refused)\(\s*"([a-z_]+)"')
    found: set[str] = set()
    for folder in ("daemon", "shared", "console"):
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(pattern.findall(path.read_text()))
    return found | {"internal"}


def test_every_emitted_code_is_documented() -> None:
    """Scripts can rely on the list: the code emits nothing else, and everything listed is used."""
    documented = set(
        re.findall(
            r"`([a-z_]+)`",
            (ROOT / "docs" / "ARCHITECTURE.md")
            .read_text()
            .split("### Error codes")[1]
            .split("###")[0],
        )
    )
    emitted = _codes_in_source()
    assert emitted <= set(ERROR_CODES), emitted - set(ERROR_CODES)
    assert set(ERROR_CODES) <= emitted | {"unsupported_version"}, (
        set(ERROR_CODES) - emitted
    )
    assert set(ERROR_CODES) == documented - {"ERROR_CODES"}
