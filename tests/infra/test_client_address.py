"""The client's real address (infra/client_address.py): X-Forwarded-For read only behind
a trusted proxy, from its right end; IPv6 clients grouped by their /64 (what the auth
throttle counts: tests/gateway/test_auth_throttle.py)."""
import pytest

from infra import client_address


@pytest.mark.parametrize("peer,forwarded,trusted,expected", [
    ("192.0.2.1", None, [], "192.0.2.1"),
    ("192.0.2.1", "198.51.100.1", [], "192.0.2.1"),  # no trusted proxies: the header is ignored
    ("10.1.2.3", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),
    ("10.1.2.3", "6.6.6.6, 198.51.100.1, 10.9.9.9", ["10.0.0.0/8"], "198.51.100.1"),  # rightmost untrusted hop
    ("10.1.2.3", "garbage", ["10.0.0.0/8"], "10.1.2.3"),
    ("192.0.2.1", "198.51.100.1", ["10.0.0.0/8"], "192.0.2.1"),  # the peer is not a trusted proxy
    ("::1", "2001:db8::7", ["::1/128"], "2001:db8::7"),
])
def test_the_client_address(settings, peer, forwarded, trusted, expected):
    settings.TRUSTED_PROXIES = trusted
    assert client_address.resolve(peer, forwarded) == expected


def test_ipv6_clients_are_counted_per_64():
    assert client_address.throttle_subject("2001:db8:1:2:aaaa::1") == client_address.throttle_subject("2001:db8:1:2::ffff")
    assert client_address.throttle_subject("2001:db8:1:2::1") != client_address.throttle_subject("2001:db8:1:3::1")
    assert client_address.throttle_subject("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_address.throttle_subject(None) is None
