"""Who may drive the dashboard, decided without a server: the Host check Voila runs with,
the names it accepts, and the settings that turn the token, Host and Origin checks on.
The same checks are exercised through the real server in test_ui_serve.py."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from nbrunner.ui.serve import WIDGET_MESSAGES, local_hostnames, voila_config
from nbrunner.ui.voila_app import check_host, host_name


def allowed(host: str, settings: dict[str, Any]) -> bool:
    handler: Any = SimpleNamespace(
        request=SimpleNamespace(host=host), settings=settings, log=SimpleNamespace(warning=print)
    )
    return check_host(handler)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("alocalhost]:8866", False),  # a bracket at one end only is no IPv6 literal
        ("[localhost:8866", False),
        ("[::1]:8866", True),
        ("127.0.0.1:8866", True),
        ("localhost:8866", True),
        ("rebind.attacker.example:8866", False),
    ],
)
def test_without_names_of_its_own_the_check_is_jupyters(host: str, ok: bool) -> None:
    """No `local_hostnames` setting: loopback addresses and "localhost" only."""
    assert allowed(host, {"allow_remote_access": False}) is ok


def test_a_host_name_is_its_header_without_port_or_brackets() -> None:
    assert host_name("[::1]:8866") == "::1"
    assert host_name("[::1]") == "::1"
    assert host_name("example.org:80") == "example.org"
    assert host_name("alocalhost]") == "alocalhost]"
    assert host_name("[localhost") == "[localhost"


def test_bound_to_every_address_the_local_names_are_this_machines() -> None:
    names = set(local_hostnames("0.0.0.0"))
    assert {"localhost", socket.gethostname(), socket.getfqdn(), "127.0.0.1"} <= names
    addresses = {
        a.address.split("%")[0]
        for nic in psutil.net_if_addrs().values()
        for a in nic
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }
    assert addresses <= names
    machine = {"localhost", socket.gethostname(), socket.getfqdn()}
    for name in names - machine:  # every other name is an address, without a zone
        ipaddress.ip_address(name)
    assert local_hostnames("::") == sorted(names)


def test_voila_is_told_the_token_the_address_and_the_names() -> None:
    notebook = Path("dashboard.ipynb")
    config = voila_config("127.0.0.1", 8866, "s3cret", notebook)
    voila = config["Voila"]
    assert config["notebook"] == str(notebook)
    assert (voila["ip"], voila["port"], voila["token"]) == ("127.0.0.1", 8866, "s3cret")
    assert voila["open_browser"] is False  # we open the URL with the token ourselves
    assert voila["tornado_settings"] == {
        "allow_remote_access": False,
        "local_hostnames": ["127.0.0.1", "localhost"],
    }
    untracked = config["MappingKernelManager"]["untracked_message_types"]
    assert set(WIDGET_MESSAGES) <= set(untracked)  # widget traffic keeps no kernel alive
    assert len(untracked) == len(set(untracked))
