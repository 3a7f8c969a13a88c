"""Tests for reading published sub-processor lists and importing them."""

import os
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyturn.shared.vendorlist import (
    IMPORTED_DEFAULT_TTL,
    IMPORTED_MAX_TTL,
    ListedVendor,
    ParsedList,
    VendorListError,
    import_vendors,
    parse_vendor_list,
    plan_import,
    render_vendor_tables,
    vendor_id,
)

LISTS = Path(__file__).parents[1] / "data" / "subprocessors"

BASECAMP_IDS = [
    "amazon-web-services",
    "braintree",
    "customer-io",
    "google-cloud-platform",
    "help-scout",
    "mailchimp",
    "sentry",
    "taxjar",
    "twilio",
    "zapier",
]
HEY_IDS = [
    "amazon-web-services",
    "braintree",
    "customer-io",
    "google-cloud-platform",
    "hellosign",
    "help-scout",
    "mailchimp",
    "sentry",
    "taxjar",
    "twilio",
    "zapier",
]
CAMPFIRE_IDS = [
    "amazon-web-services",
    "braintree",
    "clicky",
    "google-analytics",
    "google-cloud-platform",
    "hellosign",
    "help-scout",
    "taxjar",
    "twilio",
]
LIST_IDS = {"basecamp": BASECAMP_IDS, "hey": HEY_IDS, "campfire": CAMPFIRE_IDS}

MINIMAL_CONFIG = (Path(__file__).parents[1] / "data" / "one-vendor.toml").read_text()


def _parse_list(name: str) -> ParsedList:
    path = LISTS / f"{name}.md"
    return parse_vendor_list(path.read_text(encoding="utf-8"), filename=path.name)


def _example_config() -> dict[str, Any]:
    text = (files("keyturn.config") / "keyturn.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@pytest.mark.parametrize("name", ["basecamp", "hey", "campfire"])
def test_published_list_parses_completely(name: str) -> None:
    """Each published list yields every vendor it names, in order, with no problems."""
    parsed = _parse_list(name)

    assert [vendor.id for vendor in parsed.vendors] == LIST_IDS[name]
    assert parsed.problems == []
    assert {vendor.location for vendor in parsed.vendors} == {"United States"}
    assert all(vendor.purpose.endswith(".") for vendor in parsed.vendors)
    assert all(vendor.link.startswith("https://") for vendor in parsed.vendors)


def test_published_list_fields_are_taken_verbatim() -> None:
    """Name, purpose, location and link come out exactly as the list states them."""
    vendors = {vendor.id: vendor for vendor in _parse_list("basecamp").vendors}

    assert vendors["customer-io"] == ListedVendor(
        id="customer-io",
        name="Customer.io",
        purpose="Transactional email service.",
        location="United States",
        link="https://customer.io/gdpr.html",
    )
    assert vendors["help-scout"].name == "Help Scout"
    assert vendors["amazon-web-services"].purpose == "Cloud services provider."


def test_location_comes_from_the_line_above_each_group() -> None:
    """Vendors under different location sentences or headings get their own location."""
    text = (
        "# Our subprocessors\n"
        "\n"
        "Intro prose that mentions nothing in particular.\n"
        "Subprocessors located in the United States:\n"
        "* [Acme](https://acme.example). Hosting.\n"
        "\n"
        "## Located in the European Union\n"
        "\n"
        "- [Beta GmbH](https://beta.example): Analytics.\n"
        "Our partners based in Japan:\n"
        "+ [Gamma](https://gamma.example/a_(b)) - Support desk.\n"
    )

    parsed = parse_vendor_list(text)

    assert parsed.problems == []
    assert [(v.id, v.location, v.purpose) for v in parsed.vendors] == [
        ("acme", "United States", "Hosting."),
        ("beta-gmbh", "European Union", "Analytics."),
        ("gamma", "Japan", "Support desk."),
    ]
    assert parsed.vendors[2].link == "https://gamma.example/a_(b)"


def test_csv_list_is_read_by_header() -> None:
    """A CSV export with name, purpose and location columns imports like Markdown."""
    text = (
        "Location,Name,Website,Purpose,Notes\n"
        'United States,"Acme, Inc.",https://acme.example,"Hosting, backups.",x\n'
        "\n"
        'Germany,"Quote ""Co""",,Analytics.,\n'
    )

    parsed = parse_vendor_list(text)

    assert parsed.problems == []
    assert parsed.vendors == [
        ListedVendor(
            "acme-inc",
            "Acme, Inc.",
            "Hosting, backups.",
            "United States",
            "https://acme.example",
        ),
        ListedVendor("quote-co", 'Quote "Co"', "Analytics.", "Germany", ""),
    ]


def test_csv_with_semicolons_and_short_rows() -> None:
    """A semicolon CSV is understood, and a row missing columns is reported by line."""
    text = "name;purpose;location\nAcme;Hosting.;France\nBroken row\nBeta;Mail.;Spain\n"

    parsed = parse_vendor_list(text)

    assert [vendor.id for vendor in parsed.vendors] == ["acme", "beta"]
    assert [line for line, _ in parsed.problems] == [3]


def test_csv_file_without_header_is_reported() -> None:
    """A .csv file lacking the required header gives a problem, not an exception."""
    parsed = parse_vendor_list("\nAcme,Hosting.,France\n", filename="vendors.csv")

    assert parsed.vendors == []
    assert [line for line, _ in parsed.problems] == [2]


def test_garbage_lines_are_reported_not_fatal() -> None:
    """Lines that are not understood are listed by number and the rest still imports."""
    text = (
        "---\n"
        "title: Vendors\n"
        "---\n"
        "Subprocessors located in the United States:\n"
        "* [Acme](https://acme.example). Hosting.\n"
        "* just some words in a bullet\n"
        "@@@ ### %%%\n"
        "* [Broken(https://broken.example). Oops.\n"
        "bin\x00ary\x07junk\n"
        "* [!!!](https://bang.example). No usable name.\n"
        "| --- | --- |\n"
        "* [Beta](https://beta.example). Mail.\n"
    )

    parsed = parse_vendor_list(text)

    assert [vendor.id for vendor in parsed.vendors] == ["acme", "beta"]
    assert [line for line, _ in parsed.problems] == [6, 7, 8, 9, 10]
    assert all(what for _, what in parsed.problems)


def test_vendor_without_location_is_flagged() -> None:
    """A vendor listed before any location line is kept, with a problem saying so."""
    parsed = parse_vendor_list(
        "# Vendors\n\n* [Acme](https://acme.example). Hosting.\n"
    )

    assert [(v.id, v.location) for v in parsed.vendors] == [("acme", "")]
    assert [line for line, _ in parsed.problems] == [3]


@pytest.mark.parametrize("text", ["", "\n\n   \n", "\ufeff"])
def test_empty_file_gives_nothing(text: str) -> None:
    """An empty list imports no vendors and reports no problems."""
    assert parse_vendor_list(text) == ParsedList()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Customer.io", "customer-io"),
        ("Help Scout", "help-scout"),
        ("Amazon Web Services", "amazon-web-services"),
        ("TaxJar", "taxjar"),
        ("  --AT&T  Inc.!! ", "at-t-inc"),
        ("Zürich Data AG", "z-rich-data-ag"),
        ("42 Labs", "42-labs"),
    ],
)
def test_vendor_id_from_name(name: str, expected: str) -> None:
    """A vendor's id is derived from its name the same way everywhere."""
    assert vendor_id(name) == expected


def test_vendor_id_needs_a_letter_or_digit() -> None:
    """A name with nothing to build an id from is refused rather than given ''."""
    with pytest.raises(ValueError, match="no letters or digits"):
        vendor_id(" .-! ")


def test_repeated_vendor_is_added_once() -> None:
    """A vendor listed twice in one file is added once; a differing repeat is noted."""
    text = (
        "Located in the United States:\n"
        "* [Acme](https://acme.example). Hosting.\n"
        "* [Acme](https://acme.example). Hosting.\n"
        "* [ACME](https://acme.example). Other.\n"
    )

    parsed = parse_vendor_list(text)
    plan = plan_import({"braintree"}, parsed)

    assert [vendor.name for vendor in plan.added] == ["Acme"]
    assert plan.skipped == []
    assert [line for line, _ in plan.problems] == [4]


def test_plan_skips_vendors_already_configured() -> None:
    """Vendors the configuration already has are skipped, never overwritten."""
    plan = plan_import({"braintree", "sentry"}, _parse_list("basecamp"))

    assert [vendor.id for vendor in plan.skipped] == ["braintree", "sentry"]
    assert len(plan.added) == len(BASECAMP_IDS) - 2


def test_rendered_tables_have_no_scopes() -> None:
    """Imported vendors get empty scopes, so nothing is granted until an admin acts."""
    tables = tomllib.loads(render_vendor_tables(_parse_list("campfire").vendors))

    assert list(tables["vendors"]) == CAMPFIRE_IDS
    clicky = tables["vendors"]["clicky"]
    assert clicky == {
        "name": "Clicky",
        "purpose": "Web analytics service.",
        "location": "United States",
        "scopes": [],
        "default_ttl": IMPORTED_DEFAULT_TTL,
        "max_ttl": IMPORTED_MAX_TTL,
    }


def test_rendered_strings_escape_quotes_and_backslashes() -> None:
    """Names with quotes, backslashes or control characters survive the round trip."""
    vendor = ListedVendor(
        id="odd-co",
        name='Odd "Co" \\ Sons',
        purpose="Line one\nline two\ttabbed \x7f\x01 end",
        location='C:\\ "quoted"',
        link="",
    )

    appended = MINIMAL_CONFIG + "\n" + render_vendor_tables([vendor])
    table = tomllib.loads(appended)["vendors"]["odd-co"]

    assert (table["name"], table["purpose"], table["location"]) == (
        vendor.name,
        vendor.purpose,
        vendor.location,
    )


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_rendered_strings_round_trip_any_text(text: str) -> None:
    """Whatever text a list holds, the written TOML reads back as the same text."""
    vendor = ListedVendor("any", text, text, text, "")

    table = tomllib.loads(render_vendor_tables([vendor]))["vendors"]["any"]

    assert table["name"] == table["purpose"] == table["location"] == text


def test_import_twice_adds_nothing_the_second_time(tmp_path: Path) -> None:
    """Running the same import again leaves the configuration as it was."""
    config = tmp_path / "keyturn.toml"
    config.write_text(MINIMAL_CONFIG, encoding="utf-8")
    os.chmod(config, 0o640)

    first = import_vendors(config, LISTS / "basecamp.md")
    after_first = config.read_bytes()
    second = import_vendors(config, LISTS / "basecamp.md")

    assert len(first.added) == len(BASECAMP_IDS) - 1
    assert [vendor.id for vendor in first.skipped] == ["braintree"]
    assert second.added == []
    assert len(second.skipped) == len(BASECAMP_IDS)
    assert config.read_bytes() == after_first
    assert after_first.startswith(MINIMAL_CONFIG.encode())
    assert config.stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [config]

    loaded = tomllib.loads(after_first.decode())
    imported = [vid for vid in BASECAMP_IDS if vid != "braintree"]
    assert list(loaded["vendors"]) == ["braintree", *imported]
    assert loaded["vendors"]["braintree"]["scopes"] == ["payments:read"]
    assert loaded["vendors"]["zapier"]["scopes"] == []


def test_import_after_identities_keeps_the_file_valid(tmp_path: Path) -> None:
    """Importing into a configuration that `keyturn init` extended still parses."""
    config = tmp_path / "keyturn.toml"
    identities = '\n[identities.admin]\nrole = "admin"\npublic_key = "x"'
    config.write_text(MINIMAL_CONFIG + identities, encoding="utf-8")

    import_vendors(config, LISTS / "campfire.md")
    loaded = tomllib.loads(config.read_text(encoding="utf-8"))

    assert loaded["identities"]["admin"]["role"] == "admin"
    assert set(loaded["vendors"]) == set(CAMPFIRE_IDS)


def test_import_follows_a_symlinked_config(tmp_path: Path) -> None:
    """A configuration reached through a symbolic link is updated, the link kept."""
    real = tmp_path / "real.toml"
    real.write_text(MINIMAL_CONFIG, encoding="utf-8")
    link = tmp_path / "keyturn.toml"
    link.symlink_to(real)

    import_vendors(link, LISTS / "hey.md")

    assert link.is_symlink()
    assert set(tomllib.loads(real.read_text(encoding="utf-8"))["vendors"]) == set(
        HEY_IDS
    )


def test_import_into_example_config_adds_nothing(tmp_path: Path) -> None:
    """The shipped example already holds every vendor of the three lists."""
    config = tmp_path / "keyturn.toml"
    config.write_bytes((files("keyturn.config") / "keyturn.toml").read_bytes())

    for name in LIST_IDS:
        plan = import_vendors(config, LISTS / f"{name}.md")
        assert plan.added == []
        assert [vendor.id for vendor in plan.skipped] == LIST_IDS[name]


def test_import_refuses_non_utf8_list(tmp_path: Path) -> None:
    """A list saved in another encoding gives a clear error and changes nothing."""
    config = tmp_path / "keyturn.toml"
    config.write_text(MINIMAL_CONFIG, encoding="utf-8")
    listing = tmp_path / "vendors.csv"
    listing.write_bytes(
        "name,purpose,location\nZ\xfcrich AG,Hosting.,CH\n".encode("latin-1")
    )

    with pytest.raises(VendorListError, match="not UTF-8"):
        import_vendors(config, listing)
    assert config.read_text(encoding="utf-8") == MINIMAL_CONFIG


def test_import_refuses_missing_files(tmp_path: Path) -> None:
    """A missing list or configuration gives VendorListError, not a traceback."""
    config = tmp_path / "keyturn.toml"
    config.write_text(MINIMAL_CONFIG, encoding="utf-8")

    with pytest.raises(VendorListError, match="cannot read vendor list"):
        import_vendors(config, tmp_path / "absent.md")
    with pytest.raises(VendorListError, match="cannot read configuration"):
        import_vendors(tmp_path / "absent.toml", LISTS / "hey.md")


def test_import_refuses_broken_config(tmp_path: Path) -> None:
    """An invalid configuration is reported and left exactly as it was."""
    config = tmp_path / "keyturn.toml"
    config.write_text("[vendors\nname = ", encoding="utf-8")

    with pytest.raises(VendorListError, match="not valid TOML"):
        import_vendors(config, LISTS / "hey.md")
    assert config.read_text(encoding="utf-8") == "[vendors\nname = "
    assert list(tmp_path.iterdir()) == [config]


def test_import_that_would_break_config_changes_nothing(tmp_path: Path) -> None:
    """If appended tables could not load, the import stops before touching the file."""
    config = tmp_path / "keyturn.toml"
    original = 'vendors = { braintree = { name = "Braintree" } }\n'
    config.write_text(original, encoding="utf-8")

    with pytest.raises(VendorListError, match="inline table"):
        import_vendors(config, LISTS / "hey.md")
    assert config.read_text(encoding="utf-8") == original
    assert list(tmp_path.iterdir()) == [config]


def test_example_config_lists_every_published_vendor() -> None:
    """The shipped example names each vendor of the three lists once, with sources."""
    vendors = _example_config()["vendors"]

    every_id = set(BASECAMP_IDS) | set(HEY_IDS) | set(CAMPFIRE_IDS)
    assert set(vendors) == every_id | {"model-host"}
    for vendor in _parse_list("basecamp").vendors + _parse_list("campfire").vendors:
        table = vendors[vendor.id]
        assert (table["name"], table["purpose"], table["location"]) == (
            vendor.name,
            vendor.purpose,
            vendor.location,
        )
    for vid in every_id:
        expected = [name for name, ids in LIST_IDS.items() if vid in ids]
        assert vendors[vid]["sources"] == expected
        assert any(scope.endswith(":admin") for scope in vendors[vid]["scopes"])
    assert vendors["model-host"]["name"] == "Model Host"
    assert "prompts:read" in vendors["model-host"]["scopes"]


def test_example_config_daemon_and_policy_settings() -> None:
    """The example's daemon and policy settings are the documented demo values."""
    config = _example_config()

    assert config["daemon"] == {
        "pending_ttl": "15m",
        "checkpoint_every": 1000,
        "snapshot_interval": "5s",
    }
    assert config["policy"] == {"default": "review", "max_ttl": "24h"}
    assert "identities" not in config


def test_example_config_rules() -> None:
    """Admin scopes are always denied first, and the documented vendor rules hold."""
    config = _example_config()
    rules = config["rules"]
    vendors = config["vendors"]
    by_name = {rule["name"]: rule for rule in rules}

    assert rules[0] == {
        "name": "no-admin-scopes",
        "vendors": ["*"],
        "scopes": ["*:admin"],
        "action": "deny",
    }
    assert by_name["braintree-read"]["scopes"] == ["payments:read"]
    assert by_name["braintree-read"]["action"] == "approve"
    assert by_name["braintree-read"]["max_ttl"] == "15m"
    assert by_name["braintree-refund"]["scopes"] == ["payments:refund"]
    assert by_name["braintree-refund"]["action"] == "review"
    assert by_name["braintree-refund"]["approvals"] == 1
    assert vendors["braintree"]["max_ttl"] == "30m"
    assert by_name["sentry-errors-read"]["scopes"] == ["errors:read"]
    assert by_name["sentry-errors-read"]["action"] == "approve"
    assert by_name["sentry-errors-read"]["max_ttl"] == "1h"
    assert by_name["model-host-prompts"]["scopes"] == ["prompts:read"]
    assert by_name["model-host-prompts"]["action"] == "review"
    assert by_name["model-host-prompts"]["approvals"] == 1
    assert vendors["model-host"]["max_ttl"] == "10m"


def test_example_config_rules_name_real_vendors_and_scopes() -> None:
    """Every rule refers to configured vendors and to scopes those vendors may hold."""
    config = _example_config()
    vendors = config["vendors"]

    for rule in config["rules"]:
        named = vendors if rule["vendors"] == ["*"] else rule["vendors"]
        assert set(named) <= set(vendors), rule["name"]
        held = {scope for vid in named for scope in vendors[vid]["scopes"]}
        if rule["scopes"] != ["*:admin"]:
            assert set(rule["scopes"]) <= held, rule["name"]
        assert len(set(rule["vendors"])) == len(rule["vendors"])
    assert len({rule["name"] for rule in config["rules"]}) == len(config["rules"])
