"""`python -m openclaw_site.server`: daphne, with a graceful end to the closing handshake.

autobahn (daphne's WebSocket engine) answers a completed closing handshake by
aborting the TCP connection (RST). Browsers then report the close as not clean
(`wasClean: false`) even though both close frames were exchanged — and the
article's client reconnects every 3 seconds after any unclean close, so a
revoked key would retry forever. After a clean handshake this server closes
the TCP connection normally; every other drop still aborts.
"""
from __future__ import annotations

import daphne.ws_protocol
from daphne.cli import CommandLineInterface


class GracefulWebSocketProtocol(daphne.ws_protocol.WebSocketProtocol):
    def dropConnection(self, abort: bool = False) -> None:  # noqa: N802 (autobahn's name)
        super().dropConnection(abort=abort and not self.wasClean)


def main() -> None:
    daphne.ws_protocol.WebSocketFactory.protocol = GracefulWebSocketProtocol
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
