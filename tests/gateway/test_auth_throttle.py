"""Failed authentication is throttled per client address and per key lookup, before any
database work — and a correct secret is never refused because others failed on its prefix.

The consumer runs over channels' WebsocketCommunicator, with the client address an ASGI
server would put in the scope; counters are in memory (embedded pass) or Redis (services pass).
"""
import pytest
from channels.testing import WebsocketCommunicator

from gateway import auth as gateway_auth
from openclaw_site.asgi import application
from tenants.models import AuditEvent
from tests.support.frames import next_frame, send_frame

pytestmark = [pytest.mark.django_db(transaction=True)]

LIMIT = 4


@pytest.fixture
def tight(settings):
    settings.GATEWAY = {**settings.GATEWAY, "AUTH_FAILURES_PER_ADDRESS": LIMIT, "AUTH_FAILURES_PER_KEY": LIMIT,
                        "AUTH_FAILURE_WINDOW_SECONDS": 60}
    return settings


@pytest.fixture
def db_auth_calls(monkeypatch):
    """Counts the attempts that reach the database (tenants.access.authenticate_api_key)."""
    calls = []
    real = gateway_auth.authenticate_api_key

    def counting(raw, **kwargs):
        calls.append(raw)
        return real(raw, **kwargs)

    monkeypatch.setattr(gateway_auth, "authenticate_api_key", counting)
    return calls


def from_address(peer: str, *, forwarded: str | None = None, bearer: str | None = None):
    """The gateway application as an ASGI server runs it for a client at `peer`."""
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    if bearer:
        headers.append((b"authorization", f"Bearer {bearer}".encode()))

    async def app(scope, receive, send):
        return await application({**scope, "client": [peer, 50123]}, receive, send)

    return WebsocketCommunicator(app, "/websocket", headers=headers)


async def attempt(token: str, peer: str, **kwargs) -> tuple[dict, int | None]:
    """One connection's auth: (the answer frame, the close code)."""
    comm = from_address(peer, **kwargs)
    connected, _ = await comm.connect()
    assert connected
    if "bearer" not in kwargs:
        await send_frame(comm, {"type": "auth", "token": token})
    answer = await next_frame(comm)
    if answer["type"] == "auth_ok":
        await comm.disconnect()
        return answer, None
    closed = await comm.receive_output(timeout=5)
    await comm.wait()
    return answer, closed.get("code")


def wrong_secret(raw: str, n: int) -> str:
    return raw[:-6] + f"{n:06d}"


async def test_an_address_past_its_limit_gets_429_and_4429_before_any_database_work(tight, issued_key, db_auth_calls):
    for n in range(LIMIT):
        answer, code = await attempt(wrong_secret(issued_key.raw, n), "198.51.100.7")
        assert (answer["code"], code) == (401, 4401)
    assert len(db_auth_calls) == LIMIT
    for token in ("garbage", wrong_secret(issued_key.raw, 99), issued_key.raw):
        answer, code = await attempt(token, "198.51.100.7")
        assert (answer["code"], answer["error"], code) == (429, "rate_limited", 4429)
        assert answer["retryable"] is True and 0 < answer["retry_after_ms"] <= 60_000
        assert "from this address" in answer["message"]
    assert len(db_auth_calls) == LIMIT  # refused without touching the database
    # Another address is not affected.
    answer, code = await attempt("garbage", "198.51.100.8")
    assert (answer["code"], code) == (401, 4401)
    answer, _ = await attempt(issued_key.raw, "198.51.100.8")
    assert answer["type"] == "auth_ok"


async def test_the_bearer_header_is_throttled_the_same_way(tight, issued_key):
    for n in range(LIMIT):
        answer, code = await attempt("", "198.51.100.9", bearer=wrong_secret(issued_key.raw, n))
        assert (answer["code"], code) == (401, 4401)
    answer, code = await attempt("", "198.51.100.9", bearer=wrong_secret(issued_key.raw, 50))
    assert (answer["code"], code) == (429, 4429) and answer["retry_after_ms"] > 0


async def test_a_hammered_prefix_refuses_wrong_secrets_but_never_the_right_one(tight, issued_key, db_auth_calls):
    # Wrong secrets for one key's public prefix, each from a different address (no address limit is reached).
    for n in range(LIMIT):
        answer, code = await attempt(wrong_secret(issued_key.raw, n), f"203.0.113.{n + 1}")
        assert (answer["code"], code) == (401, 4401)
    for n in range(LIMIT, 40):
        answer, code = await attempt(wrong_secret(issued_key.raw, n), f"203.0.113.{n + 1}")
        assert (answer["code"], code) == (429, 4429) and "with this key" in answer["message"]
    assert len(db_auth_calls) == LIMIT  # every refusal was decided from the cached digest
    # The key's owner, from anywhere (even an address the attacker used), still authenticates.
    for peer in ("192.0.2.1", "203.0.113.5"):
        answer, _ = await attempt(issued_key.raw, peer)
        assert answer["type"] == "auth_ok" and answer["key"] == issued_key.api_key.prefix
    # The audit chain got the first failure's event, not one per attempt.
    assert await AuditEvent.objects.filter(org=issued_key.api_key.org, action__startswith="auth.failed").acount() == 1


async def test_forwarded_addresses_count_only_behind_a_trusted_proxy(tight, issued_key, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    # Through the trusted proxy, each client is counted on its own forwarded address.
    for _attempt in range(LIMIT):
        answer, _ = await attempt("garbage", "10.0.0.2", forwarded="1.2.3.4, 198.51.100.20")
        assert answer["code"] == 401
    answer, code = await attempt("garbage", "10.0.0.3", forwarded="198.51.100.20")
    assert (answer["code"], code) == (429, 4429)
    answer, _ = await attempt("garbage", "10.0.0.2", forwarded="198.51.100.21")
    assert answer["code"] == 401  # another client behind the same proxy
    # A client that is not a trusted proxy cannot escape its count by forging the header.
    for n in range(LIMIT):
        await attempt("garbage", "192.0.2.50", forwarded=f"198.51.100.{100 + n}")
    answer, code = await attempt("garbage", "192.0.2.50", forwarded="198.51.100.199")
    assert (answer["code"], code) == (429, 4429)
