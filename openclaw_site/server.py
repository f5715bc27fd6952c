"""`python -m openclaw_site.server`: daphne, with three adaptations for the gateway.

1. A graceful end to the closing handshake. autobahn (daphne's WebSocket
   engine) answers a completed closing handshake by aborting the TCP
   connection (RST). Browsers then report the close as not clean
   (`wasClean: false`) although both close frames were exchanged — and the
   article's client reconnects every 3 seconds after any unclean close, so a
   revoked key would retry forever. After a clean handshake this server
   closes the TCP connection normally; every other drop still aborts.
2. A drain on shutdown. Before daphne cancels every application on SIGTERM,
   `gateway.lifecycle.drain` lets in-flight streams finish (up to
   OPENCLAW_SHUTDOWN_DRAIN_SECONDS), closes sockets with 1001 and flushes
   usage records.
3. Close code 1001 ("going away") for that shutdown, which autobahn's public
   close call refuses.
4. No garbage-collection stalls on the token path. Django, channels and litellm
   leave some 440,000 long-lived objects after import; a full collection walks
   them all (about 0.4 s on the benchmark machine), stalling every stream of the
   process at once. They are moved out of the collector's reach (`gc.freeze()`)
   once the application is loaded, before the first connection.
5. No start-up cost on the first request: litellm's lazy first-call work (provider
   modules, the streaming wrapper, tokenizer files) is done before serving
   (`gateway.providers.warm_up`).
"""
from __future__ import annotations

import asyncio
import gc

import daphne.ws_protocol
from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import defer


class GracefulWebSocketProtocol(daphne.ws_protocol.WebSocketProtocol):
    def dropConnection(self, abort: bool = False) -> None:  # noqa: N802 (autobahn's name)
        super().dropConnection(abort=abort and not self.wasClean)

    def serverClose(self, code=None) -> None:  # noqa: N802 (daphne's name)
        # autobahn's public sendClose only takes 1000 and 3000-4999; "going away"
        # (1001, shutdown) is a protocol-level code a server may send.
        if code == 1001:
            self.sendCloseFrame(code=code)
        else:
            super().serverClose(code)


class DrainingServer(Server):
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


def freeze_startup_objects() -> None:
    """Load the application now and exempt everything it allocated from collection."""
    import openclaw_site.asgi  # noqa: F401  (Django, channels, litellm and the gateway)
    from gateway.providers import warm_up

    warm_up()  # litellm's lazy first-call work, before the first client rather than during
    gc.collect()
    gc.freeze()


def main() -> None:
    daphne.ws_protocol.WebSocketFactory.protocol = GracefulWebSocketProtocol
    freeze_startup_objects()
    GatewayCommandLine.entrypoint()


if __name__ == "__main__":
    main()
