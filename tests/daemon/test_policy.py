"""Policy on the example configuration: what is approved at once, reviewed, or denied."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyturn.console.homes import example_config
from keyturn.daemon.policy import check_request, decide
from keyturn.shared.config import Config, ConfigError, load_config
from keyturn.shared.errors import KeyturnError


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("cfg") / "keyturn.toml"
    path.write_text(example_config())
    return load_config(path)


def _decide(
    config: Config, vendor: str, scopes: list[str], ttl_s: int
) -> tuple[str, str, int]:
    checked, clean = check_request(config, vendor, scopes, ttl_s)
    decision = decide(config, checked, clean, ttl_s)
    return decision.action, decision.rule, decision.cap_s


def test_braintree_read_approved_up_to_15m(config: Config) -> None:
    """braintree payments:read is approved at once up to 15m, reviewed beyond."""
    assert _decide(config, "braintree", ["payments:read"], 900)[:2] == (
        "approve",
        "braintree-read",
    )
    assert _decide(config, "braintree", ["payments:read"], 901)[0] == "review"


def test_braintree_refund_needs_one_approval(config: Config) -> None:
    """A refund waits for one human approval, and may live up to 30m."""
    action, _, cap = _decide(config, "braintree", ["payments:refund"], 1800)
    assert action == "review"
    assert cap == 1800


def test_sentry_and_model_host(config: Config) -> None:
    """sentry errors:read is automatic up to 1h; model-host prompts:read needs approval."""
    assert _decide(config, "sentry", ["errors:read"], 3600)[0] == "approve"
    assert _decide(config, "model-host", ["prompts:read"], 600)[0] == "review"


def test_admin_scopes_denied_for_every_vendor(config: Config) -> None:
    """Any scope ending in :admin is denied, even beside an allowed scope."""
    for vendor in config.vendors.values():
        admin = [p for p in vendor.scopes if p.endswith(":admin")]
        for scope in admin:
            assert _decide(config, vendor.id, [scope], 60)[0] == "deny"
    assert (
        _decide(config, "braintree", ["payments:read", "payments:admin"], 60)[0]
        == "deny"
    )


@pytest.mark.parametrize(
    ("vendor", "scopes", "ttl", "code"),
    [
        ("nobody", ["a:b"], 60, "unknown_vendor"),
        ("braintree", ["email:send"], 60, "scope_not_allowed"),
        ("braintree", ["payments"], 60, "invalid_scope"),
        ("braintree", ["payments:read"], 1801, "duration_exceeds_max"),
        ("model-host", ["prompts:read"], 601, "duration_exceeds_max"),
        ("braintree", [f"payments:r{i}" for i in range(40)], 60, "invalid_scope"),
    ],
)
def test_requests_outside_what_a_vendor_may_hold(
    config: Config, vendor: str, scopes: list[str], ttl: int, code: str
) -> None:
    """Unknown vendors, scopes it may not hold, and too long durations are refused by code."""
    with pytest.raises(KeyturnError) as caught:
        check_request(config, vendor, scopes, ttl)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ('[vendors.x]\nmax_ttl = "3x"\n', "vendors.x.max_ttl"),
        ('[[rules]]\naction = "maybe"\n', "rules[0].action"),
        ('[[rules]]\naction = "deny"\nvendors = ["ghost"]\n', "rules[0].vendors"),
        ('[identities.a]\nrole = "king"\npublic_key = "x"\n', "identities.a.role"),
        ('[daemon]\napi = "http://x"\n', "daemon.api"),
        ("[nonsense]\n", "nonsense"),
    ],
)
def test_invalid_configuration_names_file_key_and_problem(
    tmp_path: Path, patch: str, named: str
) -> None:
    """A bad configuration is refused with the file and the key in the message."""
    path = tmp_path / "keyturn.toml"
    path.write_text(patch)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "keyturn.toml" in str(caught.value)
    assert named in str(caught.value)
