"""Read published sub-processor lists and turn them into vendor tables.

A company publishes the vendors that process personal data for it, usually as
a Markdown page (a bullet per vendor under a sentence naming where they are
located) or as a spreadsheet exported to CSV. This module reads either form
into `ListedVendor` records, plans which of them are new to a configuration,
and appends the new ones to `keyturn.toml` as `[vendors.<id>]` tables.

Reading never stops at a line it does not understand: such a line becomes a
`(line number, description)` entry in `problems` and the rest of the file is
still read. Only files that cannot be read at all raise `VendorListError`.

Imported vendors get no scopes, so every request for them is denied until an
admin decides what they may hold.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import stat
import tempfile
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "IMPORTED_DEFAULT_TTL",
    "IMPORTED_MAX_TTL",
    "ImportPlan",
    "ListedVendor",
    "ParsedList",
    "VendorListError",
    "import_vendors",
    "parse_vendor_list",
    "plan_import",
    "render_vendor_tables",
    "vendor_id",
]

logger = logging.getLogger(__name__)

IMPORTED_DEFAULT_TTL = "15m"
"""Default grant duration written for an imported vendor."""

IMPORTED_MAX_TTL = "1h"
"""Longest grant duration written for an imported vendor."""

_REQUIRED_COLUMNS = ("name", "purpose", "location")
_LINK_COLUMNS = ("link", "url", "website")
_CSV_DELIMITERS = (",", ";", "\t")

_ID_SEPARATOR = re.compile(r"[^a-z0-9]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WHITESPACE = re.compile(r"\s+")
_MARKDOWN_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_FRONT_MATTER_FENCE = "---"
_HEADING = re.compile(r"\s{0,3}#{1,6}(\s|$)")
_BULLET = re.compile(r"\s*[*+-]\s+(?P<body>.*)")
_LINKED_NAME = re.compile(
    r"\[(?P<name>[^\]]*)\]\((?P<link>[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)\)(?P<rest>.*)"
)
_PURPOSE_LEAD = re.compile(r"\s*[.:;,\u2013\u2014-]?\s*")
_LOCATION = re.compile(
    r"\b(?:located|based) in\s+(?:the\s+)?(?P<location>[^:]+?)\s*:?\s*$",
    re.IGNORECASE,
)
# Blank lines, rules, table separators and empty comments: layout, not content.
_STRUCTURE_ONLY = re.compile(r"[\s*_=|:+<>!-]*")
_NO_LOCATION = "no 'located in ...:' line above this entry; location left empty"

_TOML_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


class VendorListError(Exception):
    """A vendor list or configuration file could not be read or written."""


@dataclass(frozen=True)
class ListedVendor:
    """One vendor as a published list names it."""

    id: str
    """The keyturn vendor id derived from `name` (see `vendor_id`)."""

    name: str
    """The vendor's name as the list spells it."""

    purpose: str
    """What the vendor does for the publisher, as the list words it."""

    location: str
    """Where the vendor processes data, e.g. "United States"; empty if unstated."""

    link: str
    """The link the list gives for the vendor; empty if none."""


@dataclass(frozen=True)
class ParsedList:
    """Everything read from one vendor list."""

    vendors: list[ListedVendor] = field(default_factory=list)
    """Every vendor entry, in file order, including repeated ones."""

    problems: list[tuple[int, str]] = field(default_factory=list)
    """Lines that were not understood: (1-based line number, what was wrong)."""


@dataclass(frozen=True)
class ImportPlan:
    """What importing a vendor list into a configuration does."""

    added: list[ListedVendor] = field(default_factory=list)
    """Vendors new to the configuration, once each, in list order."""

    skipped: list[ListedVendor] = field(default_factory=list)
    """Vendors left alone because the configuration already has their id."""

    problems: list[tuple[int, str]] = field(default_factory=list)
    """The list's lines that were not understood, from `ParsedList.problems`."""


def vendor_id(name: str) -> str:
    """Derive a vendor id from a vendor's name.

    The name is lower-cased, every run of characters other than `a-z` and `0-9`
    becomes one `-`, and leading and trailing `-` are removed, so `Customer.io`
    becomes `customer-io`.

    Args:
        name: The vendor's name as published.

    Returns:
        The vendor id.

    Raises:
        ValueError: The name has no letter or digit that could form an id.
    """
    derived = _ID_SEPARATOR.sub("-", name.lower()).strip("-")
    if not derived:
        raise ValueError(f"vendor name {name!r} has no letters or digits for an id")
    return derived


def parse_vendor_list(text: str, *, filename: str = "") -> ParsedList:
    """Read a sub-processor list in Markdown or CSV form.

    CSV is recognised by a header row naming the columns `name`, `purpose` and
    `location` (any case, in any order, other columns ignored; comma,
    semicolon or tab separated). Anything else is read as Markdown: each
    bullet `* [Name](link). Purpose.` is a vendor, located where the nearest
    sentence or heading above it says ("...located in the United States:").
    Headings, prose and front matter are skipped without complaint.

    Args:
        text: The whole file's text.
        filename: The file's name, if known. A `.csv` name forces CSV and a
            `.md` or `.markdown` name forces Markdown; otherwise the form is
            detected from the text.

    Returns:
        The vendors found, in file order, and the lines not understood.
    """
    text = text.removeprefix("\ufeff")
    suffix = Path(filename).suffix.lower()
    if suffix == ".csv" or (suffix not in (".md", ".markdown") and _csv_header(text)):
        return _parse_csv(text)
    return _parse_markdown(text)


def plan_import(existing_ids: set[str], parsed: ParsedList) -> ImportPlan:
    """Decide which listed vendors an import adds.

    A vendor whose id the configuration already has is skipped and never
    changed. A vendor listed more than once is considered once, by its first
    entry.

    Args:
        existing_ids: Vendor ids already in the configuration.
        parsed: The list as `parse_vendor_list` read it.

    Returns:
        The vendors to add, the vendors skipped, and the list's problems.
    """
    added: list[ListedVendor] = []
    skipped: list[ListedVendor] = []
    seen: set[str] = set()
    for vendor in parsed.vendors:
        if vendor.id in seen:
            continue
        seen.add(vendor.id)
        target = skipped if vendor.id in existing_ids else added
        target.append(vendor)
    return ImportPlan(added=added, skipped=skipped, problems=list(parsed.problems))


def render_vendor_tables(vendors: list[ListedVendor]) -> str:
    """Write vendors as `[vendors.<id>]` TOML tables for `keyturn.toml`.

    Each table has an empty `scopes` list, so the daemon denies every request
    for the vendor until an admin adds the scopes it may hold.

    Args:
        vendors: The vendors to write, in order.

    Returns:
        TOML text, one table per vendor separated by blank lines, ending in a
        newline; empty if there are no vendors.

    Raises:
        ValueError: A field holds a character TOML cannot represent (a lone
            surrogate).
    """
    return "\n".join(_render_vendor_table(vendor) for vendor in vendors)


def import_vendors(config_path: Path, list_path: Path) -> ImportPlan:
    """Append the vendors of a published list that a configuration lacks.

    The new text is checked to parse, written to a temporary file beside the
    configuration (keeping its mode and owner), synced, and renamed over it, so
    a reader such as the daemon sees the old file or the new one, never a part.
    A symbolic link is followed, not replaced. Running the same import again
    adds nothing.

    Args:
        config_path: The `keyturn.toml` to extend.
        list_path: The vendor list, Markdown or CSV, in UTF-8.

    Returns:
        The plan that was carried out.

    Raises:
        VendorListError: A file cannot be read, is not UTF-8, the configuration
            is not valid TOML, or the result cannot be written.
    """
    _, list_text = _read_file(list_path, "vendor list")
    config_bytes, config_text = _read_file(config_path, "configuration")
    existing = _load_config(config_text, config_path)

    parsed = parse_vendor_list(list_text, filename=list_path.name)
    plan = plan_import(_vendor_ids(existing, config_path), parsed)
    if plan.added:
        addition = _import_block(plan.added, list_path.name)
        updated = _join_config(config_bytes, addition.encode("utf-8"))
        _check_appended(updated, config_path)
        _replace_atomically(config_path, updated)

    logger.info(
        "vendor import: list=%s config=%s added=%d skipped=%d problems=%d",
        list_path,
        config_path,
        len(plan.added),
        len(plan.skipped),
        len(plan.problems),
    )
    return plan


class _Collector:
    """Gathers vendors and problems while one list is read."""

    def __init__(self) -> None:
        self.result = ParsedList()
        self._first_seen: dict[str, tuple[int, ListedVendor]] = {}

    def problem(self, line: int, what: str) -> None:
        """Record a line that was not understood."""
        self.result.problems.append((line, what))

    def vendor(
        self, line: int, name: str, purpose: str, location: str, link: str
    ) -> bool:
        """Validate one entry and keep it, noting a repeat that differs.

        Returns:
            Whether the entry was kept.
        """
        values = [_clean(value) for value in (name, purpose, location, link)]
        if any(_has_unprintable(value) for value in values):
            self.problem(line, "entry holds control characters")
            return False
        try:
            vendor = ListedVendor(vendor_id(values[0]), *values)
        except ValueError:
            self.problem(line, f"vendor name {values[0]!r} gives no vendor id")
            return False

        first_line, first = self._first_seen.setdefault(vendor.id, (line, vendor))
        if first != vendor:
            self.problem(
                line, f"{vendor.id} listed again differently; line {first_line} is used"
            )
        self.result.vendors.append(vendor)
        return True


def _csv_header(text: str) -> tuple[str, dict[str, int]] | None:
    """Return the delimiter and column indexes if the first line is a CSV header."""
    first = next((line for line in text.split("\n") if line.strip()), "")
    for delimiter in _CSV_DELIMITERS:
        columns: dict[str, int] = {}
        for index, cell in enumerate(next(csv.reader([first], delimiter=delimiter))):
            columns.setdefault(cell.strip().lower(), index)
        if all(name in columns for name in _REQUIRED_COLUMNS):
            return delimiter, columns
    return None


def _parse_csv(text: str) -> ParsedList:
    """Read the CSV form: a header row, then one vendor per row."""
    collector = _Collector()
    header = _csv_header(text)
    if header is None:
        line = _first_content_line(text)
        if line:
            collector.problem(line, "no CSV header naming name, purpose, location")
        return collector.result

    delimiter, columns = header
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    row_start = 1
    try:
        while _csv_row_blank(next(reader, None)):
            pass
        row_start = reader.line_num + 1
        for row in reader:
            _read_csv_row(row, row_start, columns, collector)
            row_start = reader.line_num + 1
    except csv.Error as error:
        collector.problem(row_start, f"unreadable CSV from here on: {error}")
    return collector.result


def _csv_row_blank(row: list[str] | None) -> bool:
    """Tell whether a CSV row is blank; the end of input counts as not blank."""
    return row is not None and not any(cell.strip() for cell in row)


def _read_csv_row(
    row: list[str], line: int, columns: dict[str, int], collector: _Collector
) -> None:
    """Keep the vendor on one CSV row, or record why not."""
    if _csv_row_blank(row):
        return

    needed = max(columns[name] for name in _REQUIRED_COLUMNS) + 1
    if len(row) < needed:
        collector.problem(line, f"expected {needed} columns, found {len(row)}")
        return

    link_column = next((columns[c] for c in _LINK_COLUMNS if c in columns), -1)
    link = row[link_column] if 0 <= link_column < len(row) else ""
    name, purpose, location = (row[columns[c]] for c in _REQUIRED_COLUMNS)
    collector.vendor(line, name, purpose, location, link)


def _parse_markdown(text: str) -> ParsedList:
    """Read the Markdown form: bullets under sentences that name a location."""
    collector = _Collector()
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    location = ""
    for index in range(_front_matter_end(lines), len(lines)):
        line, number = lines[index], index + 1
        if _STRUCTURE_ONLY.fullmatch(line):
            continue
        if _has_unprintable(line):
            collector.problem(number, "line holds control characters")
        elif (bullet := _BULLET.fullmatch(line)) is not None:
            _read_bullet(bullet["body"], number, location, collector)
        elif (found := _location_in(line)) is not None:
            location = found
        elif not any(char.isalnum() for char in line):
            collector.problem(number, "line is neither text nor a vendor entry")
    return collector.result


def _front_matter_end(lines: list[str]) -> int:
    """Return the index of the first line after YAML front matter, or 0."""
    if not lines or lines[0].strip() != _FRONT_MATTER_FENCE:
        return 0
    for index in range(1, len(lines)):
        if lines[index].strip() == _FRONT_MATTER_FENCE:
            return index + 1
    return 0


def _location_in(line: str) -> str | None:
    """Return the location a heading or introducing sentence names, if any."""
    is_heading = _HEADING.match(line) is not None
    if not is_heading and not line.rstrip().endswith(":"):
        return None
    match = _LOCATION.search(line.lstrip("# "))
    if match is None:
        return None
    return _clean(match["location"].rstrip("."))


def _read_bullet(body: str, line: int, location: str, collector: _Collector) -> None:
    """Keep the vendor a bullet names, or record why not."""
    match = _LINKED_NAME.fullmatch(body.strip())
    if match is None:
        collector.problem(line, "list item is not of the form [Name](link). Purpose.")
        return

    name = _unescape(match["name"])
    purpose = _unescape(_PURPOSE_LEAD.sub("", match["rest"], count=1))
    kept = collector.vendor(line, name, purpose, location, match["link"])
    if kept and not location:
        collector.problem(line, _NO_LOCATION)


def _unescape(text: str) -> str:
    """Undo Markdown backslash escapes such as `\\*`."""
    return _MARKDOWN_ESCAPE.sub(r"\1", text)


def _clean(value: str) -> str:
    """Collapse runs of whitespace, line breaks included, to single spaces."""
    return _WHITESPACE.sub(" ", value).strip()


def _has_unprintable(value: str) -> bool:
    """Tell whether a value holds control characters (tab aside) or surrogates."""
    return any(
        char != "\t" and unicodedata.category(char) in ("Cc", "Cs") for char in value
    )


def _first_content_line(text: str) -> int:
    """Return the 1-based number of the first non-blank line, or 0 if none."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            return number
    return 0


def _render_vendor_table(vendor: ListedVendor) -> str:
    """Write one vendor as a TOML table."""
    return (
        f"[vendors.{_toml_key(vendor.id)}]\n"
        f"name = {_toml_string(vendor.name)}\n"
        f"purpose = {_toml_string(vendor.purpose)}\n"
        f"location = {_toml_string(vendor.location)}\n"
        "scopes = []\n"
        f"default_ttl = {_toml_string(IMPORTED_DEFAULT_TTL)}\n"
        f"max_ttl = {_toml_string(IMPORTED_MAX_TTL)}\n"
    )


def _toml_key(key: str) -> str:
    """Write a table key bare when TOML allows it, quoted otherwise."""
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(value: str) -> str:
    """Write a TOML basic string, escaping what TOML requires."""
    return '"' + "".join(_toml_char(char) for char in value) + '"'


def _toml_char(char: str) -> str:
    """Escape one character for a TOML basic string."""
    if char in _TOML_ESCAPES:
        return _TOML_ESCAPES[char]
    category = unicodedata.category(char)
    if category == "Cs":
        raise ValueError(f"lone surrogate U+{ord(char):04X} cannot be written to TOML")
    if category == "Cc":
        return f"\\u{ord(char):04X}"
    return char


def _read_file(path: Path, what: str) -> tuple[bytes, str]:
    """Read a whole UTF-8 file as bytes and text.

    Raises:
        VendorListError: The file cannot be read or is not UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise VendorListError(f"cannot read {what} {path}: {error.strerror}") from error
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise VendorListError(
            f"{what} {path} is not UTF-8 (byte {error.start}): save it as UTF-8"
        ) from error


def _load_config(text: str, path: Path) -> dict[str, object]:
    """Parse configuration text, turning failures into `VendorListError`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise VendorListError(
            f"configuration {path} is not valid TOML: {error}"
        ) from error


def _check_appended(updated: bytes, path: Path) -> None:
    """Refuse an import whose result would not load, e.g. beside inline tables."""
    try:
        tomllib.loads(updated.decode("utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise VendorListError(
            f"appending vendor tables to {path} would make it invalid TOML ({error});"
            " is `vendors` written as an inline table?"
        ) from error


def _vendor_ids(config: dict[str, object], path: Path) -> set[str]:
    """Return the vendor ids a parsed configuration defines."""
    vendors = config.get("vendors", {})
    if not isinstance(vendors, dict):
        raise VendorListError(f"configuration {path}: `vendors` is not a table")
    return set(vendors)


def _import_block(vendors: list[ListedVendor], list_name: str) -> str:
    """Write the comment and tables appended for one import."""
    source = _toml_string(list_name)
    return (
        f"# Imported from {source}. These vendors hold no scopes until an admin\n"
        "# adds the ones each may request.\n\n" + render_vendor_tables(vendors)
    )


def _join_config(existing: bytes, addition: bytes) -> bytes:
    """Append a block to configuration text, one blank line between them."""
    if not existing.strip():
        return addition
    return existing.rstrip(b"\r\n") + b"\n\n" + addition


def _replace_atomically(path: Path, data: bytes) -> None:
    """Replace a file's contents so that readers see the old or the new, whole."""
    target = path.resolve()
    try:
        original = target.stat()
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as error:
        raise VendorListError(f"cannot write beside {path}: {error}") from error

    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        _copy_ownership(temp_name, original)
        os.replace(temp_name, target)
    except OSError as error:
        Path(temp_name).unlink(missing_ok=True)
        raise VendorListError(f"cannot write configuration {path}: {error}") from error

    _sync_directory(target.parent)


def _copy_ownership(temp_name: str, original: os.stat_result) -> None:
    """Give the replacement file the original's mode, owner and group.

    The daemon may run as another user than the one importing, so a changed
    owner could leave it unable to read its own configuration.
    """
    os.chmod(temp_name, stat.S_IMODE(original.st_mode))
    current = os.stat(temp_name)
    if (current.st_uid, current.st_gid) != (original.st_uid, original.st_gid):
        os.chown(temp_name, original.st_uid, original.st_gid)


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("directory %s cannot be synced", directory)
    finally:
        os.close(fd)
