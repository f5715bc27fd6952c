"""Budget webhooks (billing/webhooks.py): signatures, and what `deliver` refuses, follows
(nothing) and waits for, against a local receiver."""
import http.server
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from billing import webhooks
from billing.webhooks import WebhookFailed, WebhookRefused, deliver, sign, verify_signature
from tests.support.webhooks import Receiver, allow_loopback, receiver  # noqa: F401  (fixture)

UTC = timezone.utc


# --- signatures ---------------------------------------------------------------------------

def test_a_fresh_valid_signature_is_accepted():
    body = webhooks.encode_body({"event": "budget.hard_limit", "b": 1, "a": [1, 2]})
    assert body == b'{"a":[1,2],"b":1,"event":"budget.hard_limit"}'
    header = webhooks.signature_header("s3cret", body)
    assert header.startswith("t=") and ",v1=" in header
    assert verify_signature("s3cret", header, body)
    assert verify_signature("s3cret", header, body.decode())


def test_tampered_body_wrong_secret_and_old_timestamps_are_rejected():
    body = b'{"event":"budget.soft_threshold","spent_usd":"16.2"}'
    now = 1_900_000_000
    header = f"t={now},v1={sign('s3cret', now, body)}"
    assert verify_signature("s3cret", header, body, now=now)
    assert not verify_signature("s3cret", header, body.replace(b"16.2", b"1.62"), now=now)
    assert not verify_signature("other", header, body, now=now)
    assert not verify_signature("s3cret", header, body, now=now + 301)  # more than five minutes old
    assert verify_signature("s3cret", header, body, now=now + 299)
    assert not verify_signature("s3cret", header, body, now=now - 301)  # from the future
    # The timestamp is signed too: replaying the signature with a fresh t fails.
    assert not verify_signature("s3cret", f"t={now + 200},v1={sign('s3cret', now, body)}", body, now=now + 200)
    for bad in ("", "v1=abc", f"t={now}", "t=soon,v1=abc", "garbage"):
        assert not verify_signature("s3cret", bad, body, now=now)


# --- deliver: refused addresses ------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook",
    "http://10.1.2.3/hook",
    "https://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://100.64.0.1/hook",
    "http://2130706433/hook",  # 127.0.0.1 as an integer
    "http://localhost:8080/hook",
])
def test_private_loopback_and_link_local_addresses_are_refused(url):
    with pytest.raises(WebhookRefused):
        deliver(url, "secret", {"event": "budget.soft_threshold"})


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "file:///etc/passwd", "gopher://example.com/",
                                 "hooks.example.com/no-scheme", "https://user:pw@hooks.example.com/"])
def test_only_plain_http_and_https_urls_are_accepted(url):
    with pytest.raises(WebhookRefused):
        deliver(url, "secret", {})


def test_a_host_is_refused_if_any_of_its_addresses_is_private(monkeypatch):
    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(WebhookRefused, match="10.0.0.5"):
        deliver("https://hooks.example.com/", "secret", {})


# --- deliver: against a local server ---------------------------------------------------------

def test_an_allowed_network_is_delivered_to_with_a_valid_signature(allow_loopback):
    payload = {"event": "budget.hard_limit", "id": "notice_1", "figures": {"spent_usd": "20"}}
    with receiver() as server:
        status = deliver(f"http://127.0.0.1:{server.server_port}/hooks?x=1", "s3cret", payload)
    assert status == 204
    [(headers, body)] = server.received
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "OpenClaw-Gateway"
    assert headers["X-OpenClaw-Event"] == "budget.hard_limit"
    assert body == webhooks.encode_body(payload)
    assert verify_signature("s3cret", headers["X-OpenClaw-Signature"], body)
    assert not verify_signature("wrong", headers["X-OpenClaw-Signature"], body)


def test_the_host_is_resolved_once_and_the_checked_address_is_the_one_called(settings, monkeypatch):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        lookups.append(host)
        return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake_getaddrinfo)
    with receiver() as server:
        deliver(f"http://hooks.example.test:{server.server_port}/", "s", {"event": "budget.soft_threshold"})
    assert lookups == ["hooks.example.test"]
    assert server.received[0][0]["Host"] == f"hooks.example.test:{server.server_port}"


def test_the_allow_list_is_exact(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    with receiver() as server, pytest.raises(WebhookRefused):
        deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
    assert server.received == []


def test_a_redirect_is_a_failure_and_not_followed(allow_loopback):
    with receiver("redirect") as server, pytest.raises(WebhookFailed, match="302") as failed:
        deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
    assert failed.value.status == 302 and len(server.received) == 1


def test_a_non_2xx_answer_is_a_failure(allow_loopback):
    with receiver("error") as server, pytest.raises(WebhookFailed, match="500"):
        deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})


def test_a_slow_receiver_times_out(allow_loopback, monkeypatch):
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 0.3)
    with receiver("slow") as server:
        started = time.monotonic()
        with pytest.raises(WebhookFailed, match="did not answer within"):
            deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
        assert time.monotonic() - started < 1.5


def test_a_receiver_dripping_its_answer_is_cut_off_at_the_total_timeout(allow_loopback, monkeypatch):
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 0.5)  # each byte arrives within it; the answer does not
    with receiver("drip") as server:
        started = time.monotonic()
        with pytest.raises(WebhookFailed):
            deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
        assert time.monotonic() - started < 2


def test_nothing_listening_is_a_retryable_failure(allow_loopback):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WebhookFailed):
        deliver(f"http://127.0.0.1:{port}/", "s", {})


def test_https_checks_the_certificate(allow_loopback, tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.behaviour, server.received = "ok", []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.raises(WebhookFailed, match="certificate"):
            deliver(f"https://127.0.0.1:{server.server_address[1]}/", "s", {})
    finally:
        server.shutdown()
        server.server_close()
    assert server.received == []


def _self_signed(tmp_path, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
