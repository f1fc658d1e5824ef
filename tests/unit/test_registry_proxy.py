"""The registry proxy's own decisions: which credentials it accepts and what a read-only user may do
(its forwarding, TLS and client certificates run against the real registry in
tests/integration/test_registry.py)."""

from __future__ import annotations

import base64

import pytest

from tests.registry_proxy import RegistryProxy


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def proxy() -> RegistryProxy:
    return RegistryProxy("http://127.0.0.1:1/apis/ccompat/v7", users={"svc": "a:b"}, read_only={"ro": "pw"})


def test_only_a_valid_basic_credential_names_a_user(proxy):
    assert proxy._authenticate(basic("svc", "a:b")) == "svc"  # the password may hold a colon
    assert proxy._authenticate(basic("ro", "pw")) == "ro"
    for header in (None, "", basic("svc", "a"), basic("nobody", "a:b"), "Basic !!!", "Bearer abc", basic("svc", "")):
        assert proxy._authenticate(header) is None, header


def test_a_read_only_user_may_read_look_up_and_test_compatibility_only(proxy):
    prefix = "/apis/ccompat/v7"
    assert proxy._is_read("GET", f"{prefix}/subjects/s-value/versions/latest")
    assert proxy._is_read("HEAD", f"{prefix}/subjects")
    assert proxy._is_read("POST", f"{prefix}/subjects/s-value")  # look a schema up
    assert proxy._is_read("POST", f"{prefix}/subjects/s-value?normalize=false")
    assert proxy._is_read("POST", f"{prefix}/compatibility/subjects/s-value/versions/latest")
    assert not proxy._is_read("POST", f"{prefix}/subjects/s-value/versions")  # register
    assert not proxy._is_read("PUT", f"{prefix}/config/s-value")
    assert not proxy._is_read("DELETE", f"{prefix}/subjects/s-value")


def test_without_credentials_configured_none_is_asked_for():
    assert not RegistryProxy("http://127.0.0.1:1").requires_auth
    with pytest.raises(ValueError, match="http://"):
        RegistryProxy("https://127.0.0.1:1")
