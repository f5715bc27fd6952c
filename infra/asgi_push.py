"""One key beyond the ASGI spec, shared by the gateway's server and its consumer.

A `websocket.send` message carrying ``PUSH: True`` asks the server to write the
frame — and everything queued on the socket before it — to the socket at once,
instead of at its event loop's next turn. The gateway's daphne
(`openclaw_site/server.py`, `openclaw_site/sockets.py`) honours it; any other ASGI
server ignores an unknown key and sends the frame as usual. Used for the first
token of a response (`gateway/consumers.py`): docs/architecture.md, "The first
token's way out".
"""
from __future__ import annotations

PUSH = "openclaw.push"
