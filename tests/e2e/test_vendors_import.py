"""Importing published sub-processor lists with ``keyturn vendors import``."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, cli_json, run_cli

from keyturn.console.homes import init_home
from keyturn.shared.keys import Home

LISTS = Path(__file__).parents[1] / "data" / "subprocessors"

SMALL_CONFIG = (Path(__file__).parents[1] / "data" / "one-vendor.toml").read_text()

BASECAMP_NEW = [
    "amazon-web-services",
    "customer-io",
    "google-cloud-platform",
    "help-scout",
    "mailchimp",
    "sentry",
    "taxjar",
    "twilio",
    "zapier",
]

CSV_LIST = """\
name,purpose,location,link
Acme Analytics,Product analytics.,Germany,https://acme.example/gdpr
"Pay, Inc.",Card payments.,United States,https://pay.example/dpa
"""

GARBAGE_LIST = """\
# Subprocessors

Subprocessors located in Ireland:
* [Good Vendor](https://good.example). Hosting.
* this line is not a vendor entry
* [Another Good](https://another.example). Backups.
@@@ ### ~~~
* [Broken link(https://broken.example). Lost.
"""


@pytest.fixture
def small_home() -> Iterator[Path]:
    """A home whose configuration knows only Braintree."""
    root = Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp"))
    config = root / "small.toml"
    config.write_text(SMALL_CONFIG)
    home = root / "home"
    init_home(home, config)
    yield home
    shutil.rmtree(root, ignore_errors=True)


def _import(home: Path, path: Path) -> dict[str, Any]:
    code, out = cli_json(home, "vendors", "import", str(path))
    assert code == 0, out
    assert isinstance(out, dict)
    return out


def _vendor_tables(home: Path) -> dict[str, dict[str, Any]]:
    vendors = tomllib.loads(Home(home).config.read_text())["vendors"]
    assert isinstance(vendors, dict)
    return vendors


def test_published_lists_add_only_missing_vendors(small_home: Path) -> None:
    """The three published lists add each vendor the configuration lacks, once."""
    basecamp = _import(small_home, LISTS / "basecamp.md")
    assert [v["id"] for v in basecamp["added"]] == BASECAMP_NEW
    assert basecamp["skipped"] == ["braintree"]
    assert basecamp["problems"] == []

    hey = _import(small_home, LISTS / "hey.md")
    assert [v["id"] for v in hey["added"]] == ["hellosign"]
    campfire = _import(small_home, LISTS / "campfire.md")
    added = [v["id"] for v in campfire["added"]]
    assert added == ["clicky", "google-analytics"]

    vendors = _vendor_tables(small_home)
    assert len(vendors) == 13
    assert vendors["customer-io"]["name"] == "Customer.io"
    assert vendors["customer-io"]["scopes"] == []
    assert vendors["braintree"]["scopes"] == ["payments:read"]


def test_example_home_already_lists_every_published_vendor(home: Path) -> None:
    """The example configuration holds every vendor of the three lists already."""
    before = Home(home).config.read_bytes()
    for name in ("basecamp", "hey", "campfire"):
        out = _import(home, LISTS / f"{name}.md")
        assert out["added"] == [] and out["problems"] == []
        assert len(out["skipped"]) >= 9
    assert Home(home).config.read_bytes() == before


def test_second_run_adds_nothing(small_home: Path) -> None:
    """Importing the same list twice never duplicates a vendor."""
    _import(small_home, LISTS / "hey.md")
    after_first = Home(small_home).config.read_bytes()

    again = _import(small_home, LISTS / "hey.md")

    assert again["added"] == []
    assert len(again["skipped"]) == 11
    assert Home(small_home).config.read_bytes() == after_first


def test_csv_list(small_home: Path, tmp_path: Path) -> None:
    """A spreadsheet exported as CSV imports like the Markdown form."""
    path = tmp_path / "vendors.csv"
    path.write_text(CSV_LIST)

    out = _import(small_home, path)

    assert [v["id"] for v in out["added"]] == ["acme-analytics", "pay-inc"]
    acme = _vendor_tables(small_home)["acme-analytics"]
    assert (acme["location"], acme["scopes"]) == ("Germany", [])


def test_garbage_lines_are_reported_not_fatal(small_home: Path, tmp_path: Path) -> None:
    """Lines that are not vendor entries are named by line number; the rest imports."""
    path = tmp_path / "list.md"
    path.write_text(GARBAGE_LIST)

    out = _import(small_home, path)
    human = run_cli(small_home, "vendors", "import", str(path))

    assert [v["id"] for v in out["added"]] == ["good-vendor", "another-good"]
    lines = [problem["line"] for problem in out["problems"]]
    assert lines == [5, 7, 8]
    assert human.returncode == 0
    assert "line 5:" in human.stdout and "line 8:" in human.stdout


def test_empty_file_adds_nothing(small_home: Path, tmp_path: Path) -> None:
    """An empty list is not an error and changes nothing."""
    path = tmp_path / "empty.md"
    path.write_text("")
    before = Home(small_home).config.read_bytes()

    out = _import(small_home, path)

    assert out == {"added": [], "skipped": [], "problems": []}
    assert Home(small_home).config.read_bytes() == before


def test_unreadable_list_is_a_usage_error(small_home: Path, tmp_path: Path) -> None:
    """A missing or non-UTF-8 file exits 2 and names the file."""
    missing = run_cli(small_home, "vendors", "import", str(tmp_path / "nope.md"))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"name,purpose,location\nCaf\xe9,Coffee.,France\n")
    not_utf8 = run_cli(small_home, "vendors", "import", str(latin))

    assert missing.returncode == 2 and "nope.md" in missing.stderr
    assert not_utf8.returncode == 2 and "UTF-8" in not_utf8.stderr


def test_vendors_ls_shows_scopes(small_home: Path) -> None:
    """``vendors ls`` lists configured vendors with the scopes each may hold."""
    _import(small_home, LISTS / "campfire.md")

    code, out = cli_json(small_home, "vendors", "ls")
    human = run_cli(small_home, "vendors", "ls")

    assert code == 0
    by_id = {vendor["id"]: vendor for vendor in out["vendors"]}
    assert by_id["braintree"]["scopes"] == ["payments:read"]
    assert by_id["clicky"]["scopes"] == []
    assert "payments:read" in human.stdout and "clicky" in human.stdout


def test_running_daemon_picks_up_imported_vendors(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """A running daemon knows imported vendors at once and refuses them any scope."""
    path = tmp_path / "vendors.csv"
    path.write_text(CSV_LIST)
    ask = ("request", "acme-analytics", "data:read", "--ttl", "5m", "--reason", "x")

    code, before = cli_json(daemon.home, *ask)
    assert code == 2 and before["error"]["code"] == "unknown_vendor"

    _import(daemon.home, path)
    code, after = cli_json(daemon.home, *ask)

    assert code == 1 and after["error"]["code"] == "scope_not_allowed"
    code, listed = cli_json(daemon.home, "vendors", "ls")
    assert "acme-analytics" in {vendor["id"] for vendor in listed["vendors"]}
