"""Signed webhook deliveries (budget notifications), with the standard library only.

`deliver(url, secret, payload)` POSTs the payload as compact JSON with sorted keys
and an `X-OpenClaw-Signature: t=<unix seconds>,v1=<hex>` header, where the hex is
HMAC-SHA256 of `f"{t}.{body}"` keyed with the org's webhook secret. A receiver
checks it with `verify_signature` (or the same few lines, docs/token-control.md)
and rejects timestamps more than five minutes away from its clock.

The URL is an org's, so it is not trusted to point anywhere harmless:

- only http and https, no credentials in the URL;
- the host is resolved once and refused if *any* of its addresses is private,
  loopback, link-local (cloud metadata), multicast, reserved, unspecified or
  otherwise not globally routable (IPv4-mapped IPv6 addresses are judged by their
  IPv4 address), unless the operator allowed that network
  (`WEBHOOK_ALLOWED_NETWORKS`);
- the connection goes to the address checked, never to a second resolution (no
  DNS-rebinding window), with the Host header and, for https, SNI and the
  certificate checked against the host name;
- redirects are not followed (a 3xx is a failure); connect timeout 3 s, and the
  whole response must arrive within 5 s.

`WebhookRefused` (the address or URL is not acceptable: retrying cannot help) and
`WebhookFailed` (network error, timeout, non-2xx: worth retrying) tell the caller
which is which.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from django.conf import settings

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0  # for the whole response (status line and headers), not per read
SIGNATURE_HEADER = "X-OpenClaw-Signature"
EVENT_HEADER = "X-OpenClaw-Event"
USER_AGENT = "OpenClaw-Gateway"
DEFAULT_TOLERANCE = 300  # seconds a receiver should accept a signature's timestamp


class WebhookError(Exception):
    """A delivery did not happen."""


class WebhookRefused(WebhookError):
    """The URL or the address it resolves to is not allowed (not retried)."""


class WebhookFailed(WebhookError):
    """The receiver could not be reached in time or did not answer 2xx (retried)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


# --- signing ------------------------------------------------------------------------

def encode_body(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: int, body: str | bytes) -> str:
    """Hex HMAC-SHA256 of `f"{timestamp}.{body}"` keyed with `secret`."""
    message = str(int(timestamp)).encode() + b"." + _as_bytes(body)
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, body: str | bytes, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={sign(secret, t, body)}"


def verify_signature(secret: str | bytes, header: str, body: str | bytes, *, now: float | None = None,
                     tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """True if `header` (an X-OpenClaw-Signature value) signs exactly `body` with
    `secret` and its timestamp is within `tolerance` seconds of `now`.

    `body` must be the raw request body as received (not re-serialised JSON). Several
    `v1=` entries are accepted (any one matching), so a sender may sign with an old
    and a new secret during a rotation."""
    if not header or not secret:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


# --- which addresses may be called ----------------------------------------------------

def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(item, strict=False) for item in getattr(settings, "WEBHOOK_ALLOWED_NETWORKS", [])]


def _forbidden_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for flag in ("is_unspecified", "is_loopback", "is_link_local", "is_multicast", "is_private", "is_reserved"):
        if getattr(ip, flag):
            return flag[3:].replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


def check_address(address: str, networks=None) -> None:
    """Raise WebhookRefused unless `address` may be called."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    # An IPv4-mapped IPv6 address (::ffff:10.0.0.1) reaches the IPv4 address: judge that.
    judged = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    networks = allowed_networks() if networks is None else networks
    if any(candidate in network for network in networks for candidate in {ip, judged}
           if candidate.version == network.version):
        return
    reason = _forbidden_reason(judged)
    embedded = judged.sixtofour if isinstance(judged, ipaddress.IPv6Address) else None
    if reason is None and embedded is not None and _forbidden_reason(embedded):
        reason = f"6to4 of a {_forbidden_reason(embedded)}"
    if reason:
        raise WebhookRefused(f"refusing to call {address}: {reason} address "
                             "(allow its network in OPENCLAW_WEBHOOK_ALLOWED_NETWORKS if intended)")


def resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo results for host:port, every address checked; raises WebhookRefused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        # A name that does not resolve now may resolve later: worth a retry.
        raise WebhookFailed(f"cannot resolve {host!r}: {exc}") from exc
    if not infos:
        raise WebhookFailed(f"{host!r} resolves to no address")
    networks = allowed_networks()
    for info in infos:
        check_address(info[4][0], networks)
    return infos


# --- delivery -------------------------------------------------------------------------

class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address resolved (and checked) beforehand; Host is the host name."""

    def __init__(self, host: str, port: int, addresses: list[tuple], *, connect_timeout: float):
        super().__init__(host, port, timeout=connect_timeout)
        self._addresses = addresses
        self._connect_timeout = connect_timeout

    def _open_socket(self) -> socket.socket:
        last_error: OSError | None = None
        for family, socktype, proto, _canon, sockaddr in self._addresses:
            sock = socket.socket(family, socktype, proto)
            sock.settimeout(self._connect_timeout)
            try:
                sock.connect(sockaddr)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                last_error = exc
                sock.close()
        raise last_error or OSError("no address to connect to")

    def connect(self) -> None:
        self.sock = self._open_socket()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = http.client.HTTPS_PORT

    def __init__(self, host: str, port: int, addresses: list[tuple], *, connect_timeout: float):
        super().__init__(host, port, addresses, connect_timeout=connect_timeout)
        self._context = ssl.create_default_context()  # verifies the chain and the host name

    def connect(self) -> None:
        sock = self._open_socket()
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _parse(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"invalid webhook URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(f"webhook URL must be http or https, not {scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise WebhookRefused("webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("credentials in the webhook URL are not supported")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise WebhookRefused(f"invalid webhook host: {exc}") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), path


def deliver(url: str, secret: str, payload: dict, *, connect_timeout: float | None = None,
            read_timeout: float | None = None) -> int:
    """POST `payload` to `url`, signed with `secret`; return the (2xx) status code.

    Raises WebhookRefused for a URL or address that is not allowed and WebhookFailed
    for anything worth retrying (network errors, timeouts, redirects, non-2xx)."""
    connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
    read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
    scheme, host, port, path = _parse(url)
    addresses = resolve(host, port)
    body = encode_body(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: str(payload.get("event", "")),
        SIGNATURE_HEADER: signature_header(secret, body),
    }
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(host, port, addresses, connect_timeout=connect_timeout)
    expired = threading.Event()
    watchdog: threading.Timer | None = None
    try:
        try:
            connection.connect()
        except TimeoutError as exc:
            raise WebhookFailed(f"could not connect to {host}:{port} within {connect_timeout:g} s") from exc
        # Each read is bounded by the socket timeout; the watchdog bounds them all
        # together, so a receiver dripping a byte at a time cannot hold the worker.
        connection.sock.settimeout(read_timeout)
        watchdog = threading.Timer(read_timeout, _expire, args=(connection.sock, expired))
        watchdog.daemon = True
        watchdog.start()
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        try:  # the status is the answer; the body is read only so the connection closes cleanly
            response.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            pass
    except WebhookError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise WebhookFailed(f"TLS certificate of {host} not accepted: {exc.verify_message}") from exc
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):
            raise WebhookFailed(f"{host} did not answer within {read_timeout:g} s") from exc
        raise WebhookFailed(f"delivery to {host} failed: {exc.__class__.__name__}: {exc}") from exc
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()
    if 300 <= status < 400:
        raise WebhookFailed(f"{host} answered {status} (redirects are not followed)", status=status)
    if not 200 <= status < 300:
        raise WebhookFailed(f"{host} answered {status}", status=status)
    return status


def _expire(sock: socket.socket, expired: threading.Event) -> None:
    expired.set()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
