"""`python -m openclaw_site.server`: daphne, with a few adaptations for the gateway.

1. A graceful end to the closing handshake. autobahn (daphne's WebSocket
   engine) answers a completed closing handshake by aborting the TCP
   connection (RST). Browsers then report the close as not clean
   (`wasClean: false`) although both close frames were exchanged — and the
   article's client reconnects every 3 seconds after any unclean close, so a
   revoked key would retry forever. After a clean handshake this server
   closes the TCP connection normally; every other drop still aborts.
2. A drain on shutdown. Before daphne cancels every application on SIGTERM,
   `gateway.lifecycle.drain` lets in-flight streams finish (up to
   OPENCLAW_SHUTDOWN_DRAIN_SECONDS), closes sockets with 1001, flushes
   usage records, stops the process's background services and closes its
   database connections.
3. Close code 1001 ("going away") for that shutdown, which autobahn's public
   close call refuses.
4. No garbage-collection stalls on the token path. Django, channels and litellm
   leave some 440,000 long-lived objects after import; a full collection walks
   them all (about 0.4 s on the benchmark machine), stalling every stream of the
   process at once. They are moved out of the collector's reach (`gc.freeze()`)
   once the application is loaded, before the first connection.
5. A deadline for each HTTP request (slowloris). Twisted only closes a
   connection that sends nothing for 60 s, so a client trickling its request
   head one byte every few seconds held a socket for ever. The head (and the
   body, if any) must now be complete within `--request-head-timeout` seconds
   of the connection opening, or of the first byte of the next request on a
   kept-alive connection; past it the server answers 408 and closes.
6. No start-up cost on the first request: litellm's lazy first-call work (provider
   modules, the streaming wrapper, tokenizer files) is done before serving
   (`gateway.providers.warm_up`).
7. Background services from the start. The process's runtime (`gateway.runtime`:
   usage writer, budget lease keeper, configuration poller, ...) starts on
   daphne's event loop as the reactor starts, before the first connection is
   accepted, and stops at the end of the drain. Each server process starts its
   own (`manage.py serve` execs one server per process; nothing forks after).
8. Several processes on one port (`manage.py serve --processes N`, run by
   `openclaw_site/supervisor.py`). With `--reuse-port`, each server binds its
   own listening socket with SO_REUSEPORT, once the application is loaded, and
   the kernel spreads new connections over the processes' sockets. When its
   runtime has started, the process tells its supervisor it is ready (one byte
   on the pipe named by OPENCLAW_SERVE_READY_FD).
9. The first token's way out (`openclaw_site.sockets`): `TCP_NODELAY` on every
   accepted connection, and a `websocket.send` carrying `infra.asgi_push.PUSH`
   written to the socket at once rather than at the reactor's next turn.
10. Enough file descriptors for its sockets. Every WebSocket holds one; a service
   or a login shell usually starts with a soft limit of 1,024 open files, which
   would refuse connections past about a thousand. The process raises its soft
   limit to the hard one at start-up and logs both (docs/operations.md,
   "Open files and the listen queue").
11. Allocation tracing on request (OPENCLAW_TRACEMALLOC_DIR, for `bench.idle
   --tracemalloc`): tracemalloc starts once the application is loaded, and each
   SIGUSR2 writes a snapshot into that directory. Off unless the variable is set.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import resource
import signal
import socket
import sys

import daphne.http_protocol
import daphne.server
import daphne.ws_protocol
from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import defer
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.web import http

from openclaw_site import sockets

DEFAULT_REQUEST_HEAD_TIMEOUT = 10.0
# After the 408, how long a peer that does not read may keep the socket before it is aborted.
_ABORT_AFTER_408_SECONDS = 2.0
_REQUEST_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                             b"Content-Type: text/plain\r\nContent-Length: 16\r\n\r\nrequest timeout\n")
# The pipe a supervisor (openclaw_site/supervisor.py) reads to learn that this process serves.
READY_FD_ENV = "OPENCLAW_SERVE_READY_FD"
# Pending connections the kernel queues per listening socket (Twisted's default is 50,
# which a reconnect storm overflows: each dropped SYN costs its client a second or more);
# capped by net.core.somaxconn. For -b/-p and for --reuse-port alike.
LISTEN_BACKLOG = 1024
REUSE_PORT_BACKLOG = LISTEN_BACKLOG


class GracefulWebSocketProtocol(daphne.ws_protocol.WebSocketProtocol):
    def handle_reply(self, message):
        super().handle_reply(message)
        if message.get(sockets.PUSH):
            sockets.push(self.transport)  # the frame goes out now, not at the reactor's next turn

    def dropConnection(self, abort: bool = False) -> None:  # noqa: N802 (autobahn's name)
        super().dropConnection(abort=abort and not self.wasClean)

    def serverClose(self, code=None) -> None:  # noqa: N802 (daphne's name)
        # autobahn's public sendClose only takes 1000 and 3000-4999; "going away"
        # (1001, shutdown) is a protocol-level code a server may send.
        if code == 1001:
            self.sendCloseFrame(code=code)
        else:
            super().serverClose(code)


class HeadDeadlineChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel with a deadline for receiving each whole request.

    Armed when the connection opens, and on the first byte of each later request
    of a kept-alive connection; disarmed once the request (head and body) is
    complete, which is also the moment daphne hands a WebSocket upgrade over to
    autobahn (whose own opening-handshake timeout then applies).
    """

    head_timeout: float = DEFAULT_REQUEST_HEAD_TIMEOUT
    _head_deadline = None  # the pending IDelayedCall while a request is being read

    def connectionMade(self):  # noqa: N802 (Twisted's name)
        sockets.accepted(self.transport)  # TCP_NODELAY, before anything is written
        super().connectionMade()
        self._arm_head_deadline()

    def dataReceived(self, data):  # noqa: N802
        if self._head_deadline is None and not self._handlingRequest:
            self._arm_head_deadline()  # the first byte of the next request on a kept-alive connection
        super().dataReceived(data)

    def allContentReceived(self):  # noqa: N802
        self._disarm_head_deadline()
        super().allContentReceived()

    def requestDone(self, request):  # noqa: N802
        pipelined = bool(self._dataBuffer)
        super().requestDone(request)
        if pipelined and self.persistent and not self._handlingRequest:
            self._arm_head_deadline()  # a pipelined request whose head is still incomplete

    def connectionLost(self, reason):  # noqa: N802
        self._disarm_head_deadline()
        super().connectionLost(reason)

    def _arm_head_deadline(self) -> None:
        if self.head_timeout and self.head_timeout > 0:
            self._head_deadline = self.callLater(self.head_timeout, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            if self._head_deadline.active():
                self._head_deadline.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        self.setTimeout(None)  # Twisted's idle timeout has nothing left to do
        self.dataReceived = lambda data: None  # whatever still arrives is not parsed
        if not self.transport.disconnecting:
            # No response is under way while a request is being read (pipelined
            # requests are read only once the one before them is answered).
            self.transport.write(_REQUEST_TIMEOUT_RESPONSE)
        # Closes once the 408 is flushed; a peer that reads nothing is cut off
        # shortly after (connectionLost cancels the abort otherwise).
        if self._abortingCall is None:
            self._abortingCall = self.callLater(_ABORT_AFTER_408_SECONDS, self.forceAbortClient)
        self.loseConnection()


class HeadDeadlineHTTPFactory(daphne.http_protocol.HTTPFactory):
    """daphne's HTTP factory, building HeadDeadlineChannel instead of Twisted's HTTPChannel."""

    def protocol(self):
        channel = HeadDeadlineChannel()
        channel.head_timeout = getattr(self.server, "request_head_timeout", DEFAULT_REQUEST_HEAD_TIMEOUT)
        # The same wrapper Twisted's HTTPFactory builds (it switches to HTTP/2 when negotiated).
        return http._GenericHTTPChannelProtocol(channel)


class DrainingServer(Server):
    def __init__(self, *args, request_head_timeout: float = DEFAULT_REQUEST_HEAD_TIMEOUT, **kwargs):
        super().__init__(*args, **kwargs)
        self.request_head_timeout = request_head_timeout
        self.runtime_starting: asyncio.Task | None = None

    def run(self):
        from twisted.internet import reactor

        reactor.callWhenRunning(self.start_runtime)
        super().run()

    def start_runtime(self) -> None:
        """Start the gateway's background services on daphne's event loop. Called as
        the reactor starts, before its loop runs: the start is the first task the
        loop runs, ahead of accepting any connection."""
        from gateway.runtime import runtime  # Django is set up once the application is loaded

        loop = asyncio.get_event_loop()  # daphne's (set as current; not running yet)
        self.runtime_starting = loop.create_task(runtime.start(), name="gateway-runtime-start")
        self.runtime_starting.add_done_callback(self._runtime_started)

    def _runtime_started(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Serving without them would leave budget leases unextended and usage unwritten.
            logging.getLogger(__name__).critical("the gateway runtime did not start; stopping",
                                                 exc_info=task.exception())
            self.stop()
        elif not task.cancelled():
            tell_supervisor_ready()

    @defer.inlineCallbacks
    def kill_all_applications(self):
        from gateway.lifecycle import drain  # Django is set up once the application is loaded

        try:
            yield defer.Deferred.fromFuture(asyncio.ensure_future(drain()))
        except Exception:  # never block shutdown on the drain
            pass
        yield super().kill_all_applications()


class GatewayCommandLine(CommandLineInterface):
    server_class = DrainingServer

    def __init__(self):
        super().__init__()
        self.parser.add_argument(
            "--request-head-timeout", type=float, default=DEFAULT_REQUEST_HEAD_TIMEOUT,
            help="seconds a client has to send a whole HTTP request head (and body) before it gets 408 "
                 "and is closed; 0 disables",
        )

        self.parser.add_argument(
            "--reuse-port", action="store_true",
            help="listen on -b/-p with SO_REUSEPORT, so several server processes share the port "
                 "(manage.py serve --processes N)",
        )

    def run(self, args):
        options, _ = self.parser.parse_known_args(args)
        self.server_class = functools.partial(DrainingServer, request_head_timeout=options.request_head_timeout)
        if options.reuse_port:
            listener = listen_reusing_port(options.host or "127.0.0.1", 8000 if options.port is None else options.port)
            # The socket replaces -b/-p; daphne adopts it as a Twisted endpoint.
            args = [*_without_bind_options(args), "-e", adopted_endpoint(listener)]
        super().run(args)


def listen_reusing_port(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port that other processes of the same user may share
    (SO_REUSEPORT): the kernel spreads incoming connections over all of them. Exits with a
    one-line message (no traceback) when the address cannot be listened on."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's own TCP ports
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(address)
        listener.listen(REUSE_PORT_BACKLOG)
    except (OSError, AttributeError) as exc:  # AttributeError: a platform without SO_REUSEPORT
        sys.stderr.write(f"cannot listen on {host}:{port} with SO_REUSEPORT: {exc}\n")
        sys.exit(1)
    return listener


def adopted_endpoint(listener: socket.socket) -> str:
    """The endpoint description `server_endpoint` turns into an adopted listening socket."""
    domain = "INET6" if listener.family == socket.AF_INET6 else "INET"
    listener.set_inheritable(False)
    return f"fd:fileno={listener.detach()}:domain={domain}"


def server_endpoint(reactor, description: str):
    """Twisted's serverFromString, with "fd:fileno=N:domain=INET|INET6" understood (Twisted's
    own fd parser hands the domain on as a string, which only works for its IPv4 default),
    and TCP listening with a backlog of LISTEN_BACKLOG unless the description sets one."""
    if description.startswith("fd:"):
        params = dict(part.split("=", 1) for part in description[3:].split(":"))
        family = getattr(socket, "AF_" + params.get("domain", "INET"))
        return AdoptedStreamServerEndpoint(reactor, int(params["fileno"]), family)
    if description.startswith(("tcp:", "tcp6:")) and ":backlog=" not in description:
        description += f":backlog={LISTEN_BACKLOG}"
    return serverFromString(reactor, description)


def _without_bind_options(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-b", "--bind", "-p", "--port"):
            skip = True
        elif not arg.startswith(("--bind=", "--port=")):
            kept.append(arg)
    return kept


def tell_supervisor_ready() -> None:
    """One byte on the supervisor's pipe, if this process has one: it serves now."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd:
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except (OSError, ValueError):
            pass  # no supervisor listening any more: nothing to tell


def freeze_startup_objects() -> None:
    """Load the application now and exempt everything it allocated from collection."""
    import openclaw_site.asgi  # noqa: F401  (Django, channels, litellm and the gateway)
    from gateway.providers import warm_up

    warm_up()  # litellm's lazy first-call work, before the first client rather than during
    gc.collect()
    gc.freeze()


# Below this many open files, say that the server will refuse connections early.
FEW_OPEN_FILES = 4096


def raise_open_files_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (each socket is a file descriptor); logs
    what it did, and warns when even the hard limit leaves room for few connections.
    Returns the (soft, hard) limit now in force."""
    log = logging.getLogger(__name__)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            log.info("open files limit raised from %d to %d (the hard limit): about that many sockets", soft, wanted)
            soft = wanted
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, wanted, exc)
    else:
        log.info("open files limit %s: about that many sockets", "unlimited" if soft == resource.RLIM_INFINITY else soft)
    if soft != resource.RLIM_INFINITY and soft < FEW_OPEN_FILES:
        log.warning("open files limit is %d: connections past about that many are refused; raise the hard "
                    "limit (ulimit -Hn, systemd LimitNOFILE=; docs/operations.md)", soft)
    return soft, hard


def trace_allocations_on_request() -> None:
    """With OPENCLAW_TRACEMALLOC_DIR set: trace allocations from now on, and write a
    snapshot there on every SIGUSR2 (a diagnostic, for `python -m bench.idle --tracemalloc`)."""
    directory = os.environ.get("OPENCLAW_TRACEMALLOC_DIR")
    if not directory:
        return
    import tracemalloc

    tracemalloc.start(int(os.environ.get("OPENCLAW_TRACEMALLOC_FRAMES", "1")))
    taken = [0]

    def write_snapshot(_signum, _frame) -> None:
        taken[0] += 1
        base = os.path.join(directory, f"{os.getpid()}-{taken[0]:03d}")
        open(base + ".writing", "w").close()
        tracemalloc.take_snapshot().dump(base + ".tracemalloc")
        os.unlink(base + ".writing")

    signal.signal(signal.SIGUSR2, write_snapshot)
    logging.getLogger(__name__).warning("tracing allocations (OPENCLAW_TRACEMALLOC_DIR=%s): SIGUSR2 writes a snapshot",
                                        directory)


def main() -> None:
    daphne.ws_protocol.WebSocketFactory.protocol = GracefulWebSocketProtocol
    daphne.server.HTTPFactory = HeadDeadlineHTTPFactory  # what Server.run builds
    daphne.server.serverFromString = server_endpoint  # what Server.run listens with
    freeze_startup_objects()  # Django (and its logging configuration) is set up from here on
    raise_open_files_limit()
    trace_allocations_on_request()
    GatewayCommandLine.entrypoint()


if __name__ == "__main__":
    main()
