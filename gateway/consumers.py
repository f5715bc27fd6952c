"""The WebSocket consumer: connection state and frame dispatch, nothing else.

Frames are handled one at a time in arrival order; each generation runs in its
own task (RequestState.task) so `cancel` and `ping` are read while tokens flow.

Two things on every frame's path are cheaper than channels' defaults
(docs/architecture.md, "The first token's way in and out"): `dispatch` calls the
handler directly, without the thread hop channels makes before every message
(`aclose_old_connections`), and the first token of each response asks the server
to write it to the socket at once (`infra.asgi_push.PUSH`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import NoReturn

from autobahn.exception import Disconnected  # daphne's WebSocket engine
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from gateway import connections, lifecycle, protocol
from gateway.auth import SCOPE_AUTH_FAILURE, SCOPE_AUTH_THROTTLED, SCOPE_PRINCIPAL, authenticate, recheck_principal
from gateway.auth_throttle import AuthThrottled
from gateway.budgeting import remaining_for_key
from gateway.freshness import freshness
from gateway.key_connections import presence
from gateway.pipeline import RequestState, record_refusal, serve_request
from gateway.protocol import CloseCode, ErrorCode, GatewayError
from gateway.revocation import control_listener, key_group, org_group
from infra.asgi_push import PUSH
from tenants.access import AuthenticationFailed, KeyPrincipal

log = logging.getLogger(__name__)


def control_groups(principal: KeyPrincipal) -> list[str]:
    """The channel-layer groups whose control messages (revocation, suspension) reach a connection."""
    return [key_group(principal.key_public_id), org_group(principal.org_public_id)]


class GatewayConsumer(AsyncWebsocketConsumer):
    principal: KeyPrincipal | None = None

    async def __call__(self, scope, receive, send) -> None:
        """channels' AsyncConsumer.__call__ without a channel per connection: control
        messages reach a socket through its process's one listener (gateway/revocation.py),
        so each connection reads its own messages on its own task, one after another. An
        idle socket has no channel, no group memberships and no task besides its own."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def connect(self) -> None:
        self.limits = settings.GATEWAY
        self.requests: dict[str, RequestState] = {}
        self.closed = False
        self.released = False
        self.revoking = False
        self.auth_timer: asyncio.Task | None = None
        self.request_counter = 0
        self.presence_token: str | None = None
        self.presence_key: tuple[int, str] = (0, "")  # (key id, public id) the slot was taken for
        await self.accept()
        # The process's background services (health sharing, budget leases, the
        # configuration poller...) run from the server's start: gateway/runtime.py.
        connections.register(self)
        if lifecycle.draining:
            await self.send_frame(protocol.error_frame(
                ErrorCode.NO_HEALTHY_DEPLOYMENT, "this server is shutting down; reconnect", retryable=True))
            await self.close_with(CloseCode.GOING_AWAY)
        elif self.scope.get(SCOPE_AUTH_THROTTLED):
            await self.reject_throttled(self.scope[SCOPE_AUTH_THROTTLED])
        elif self.scope.get(SCOPE_AUTH_FAILURE):
            await self.reject_auth(self.scope[SCOPE_AUTH_FAILURE])
        elif self.scope.get(SCOPE_PRINCIPAL):
            await self.authenticated(self.scope[SCOPE_PRINCIPAL])
        else:
            self.auth_timer = asyncio.create_task(self.expire_unauthenticated())

    async def dispatch(self, message) -> None:
        """Every message of this connection goes through here. Whatever fails while
        handling one, the connection's holdings are released: a failure never leaks
        a key's connection slot or leaves a stream running upstream unbilled."""
        try:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {message['type']}")
            # channels' own dispatch first runs Django's close_old_connections on its
            # thread-sensitive executor, for every message: a thread hop (0.6-0.7 ms at
            # p50 on the benchmark machine, several ms behind a busy loop) before each
            # frame is read (python -m bench.first_token).
            # This consumer never touches the database on the loop's thread or on that
            # executor: every query goes through `database_sync_to_async` or the
            # pools of infra/threads.py, which check their connections themselves.
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            log.exception("websocket connection failed while handling %s", message.get("type"))
            if message.get("type") == "websocket.disconnect":
                await self.release()
                raise StopConsumer() from None
            await self.fail_connection()

    async def disconnect(self, code) -> None:
        await self.release()

    async def release(self) -> None:
        """Give back everything the connection holds, once, each step on its own so one
        failing step (a Redis hiccup) does not keep the others from happening."""
        if self.released:
            return
        self.released = self.closed = True
        connections.unregister(self)
        if self.auth_timer:
            self.auth_timer.cancel()
        # Each task closes its upstream stream and hands its usage record over.
        with _logged("stopping requests"):
            await self.stop_requests("client_gone")
        if self.principal is not None:
            with _logged("leaving the control groups"):
                await control_listener().leave(self, control_groups(self.principal))
        if self.presence_token:
            with _logged("releasing the connection slot"):
                freshness().key_closed(self.presence_key[0])
                await presence().release(self.presence_key[1], self.presence_token)

    async def fail_connection(self) -> None:
        """An unexpected failure: tell the client, close 1011, release everything."""
        with _logged("reporting a failure"):
            await self.send_frame(protocol.error_frame(
                ErrorCode.INTERNAL, "internal error; the connection is closed, reconnect", retryable=True))
        with _logged("closing"):
            await self.close_with(CloseCode.INTERNAL_ERROR)
        await self.release()

    async def stop_requests(self, reason: str, timeout: float = 5) -> None:
        tasks = []
        for state in list(self.requests.values()):
            if state.task and not state.task.done():
                state.stop_reason = state.stop_reason or reason
                state.task.cancel()
                tasks.append(state.task)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # --- frames in -------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.closed:
            return
        if text_data is None:
            await self.send_frame(protocol.error_frame(
                ErrorCode.BAD_REQUEST, "binary frames are not supported; send JSON text frames"))
            return
        limit = self.limits["MAX_MESSAGE_BYTES"]
        if len(text_data) > limit or len(text_data.encode()) > limit:
            await self.send_frame(protocol.error_frame(
                ErrorCode.FRAME_TOO_LARGE, f"frame is larger than the limit of {limit} bytes"))
            await self.close_with(CloseCode.FRAME_TOO_LARGE)
            return
        frame = None
        try:
            frame = protocol.parse_client_frame(text_data)
            if isinstance(frame, protocol.AuthFrame):
                await self.on_auth(frame)
            elif isinstance(frame, protocol.PingFrame):
                await self.send_frame(protocol.pong_frame())
            elif self.principal is None:
                raise GatewayError(ErrorCode.UNAUTHORIZED, "authenticate first: send an 'auth' frame",
                                   request_id=getattr(frame, "request_id", None))
            elif isinstance(frame, protocol.LlmRequestFrame):
                await self.on_llm_request(frame)
            elif isinstance(frame, protocol.CancelFrame):
                await self.on_cancel(frame)
        except GatewayError as exc:
            await self.send_frame(exc.frame())
        except Exception:
            if isinstance(frame, protocol.AuthFrame) or self.principal is None:
                raise  # authentication half done: dispatch closes the connection (1011)
            # One frame failed; the connection's state is intact, so it stays open.
            log.exception("frame handling failed")
            await self.send_frame(protocol.error_frame(
                ErrorCode.INTERNAL, "internal error; the frame was not handled",
                request_id=getattr(frame, "request_id", None), retryable=True))

    async def on_auth(self, frame: protocol.AuthFrame) -> None:
        if self.principal is not None:
            raise GatewayError(ErrorCode.BAD_REQUEST, "this connection is already authenticated")
        try:
            principal = await authenticate(frame.token, source="websocket", scope=self.scope)
        except AuthenticationFailed as exc:
            await self.reject_auth(exc.reason)
            return
        except AuthThrottled as exc:
            await self.reject_throttled(exc)
            return
        await self.authenticated(principal)

    def refuse(self, frame: protocol.LlmRequestFrame, error: GatewayError) -> NoReturn:
        """Refuse a request before it is served: its usage record, then the error frame."""
        record_refusal(principal=self.principal, frame=frame, error=error)
        raise error

    async def on_llm_request(self, frame: protocol.LlmRequestFrame) -> None:
        request_id = frame.request_id or self.new_request_id()
        if lifecycle.draining:
            self.refuse(frame, GatewayError(ErrorCode.NO_HEALTHY_DEPLOYMENT, "this server is shutting down; reconnect",
                                            request_id=request_id, retryable=True, retry_after_ms=1000))
        problem = await recheck_principal(self.principal)
        if problem:
            await self.send_frame(protocol.error_frame(ErrorCode.UNAUTHORIZED, f"access revoked: {problem}",
                                                       request_id=request_id))
            await self.revoke_access(problem)
            return
        if request_id in self.requests:
            raise GatewayError(ErrorCode.CONFLICT, f"request {request_id!r} is already in flight", request_id=request_id)
        if len(self.requests) >= self.limits["MAX_IN_FLIGHT"]:
            self.refuse(frame, GatewayError(
                ErrorCode.RATE_LIMITED, f"at most {self.limits['MAX_IN_FLIGHT']} requests may be in flight on one "
                "connection", request_id=request_id, retryable=True, retry_after_ms=1000))
        state = RequestState(request_id=request_id)
        self.requests[request_id] = state
        state.task = asyncio.create_task(
            serve_request(principal=self.principal, frame=frame, state=state, send=self.send_frame),
            name=f"llm_request:{request_id}",
        )
        state.task.add_done_callback(lambda _task, rid=request_id: self.requests.pop(rid, None))

    async def on_cancel(self, frame: protocol.CancelFrame) -> None:
        state = self.requests.get(frame.request_id)
        if state is None or state.task is None or state.task.done() or state.stop_reason:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no request {frame.request_id!r} is in flight")
        state.stop_reason = "cancelled"
        state.task.cancel()

    # --- helpers ---------------------------------------------------------------------

    def new_request_id(self) -> str:
        self.request_counter += 1
        return f"req-{self.request_counter}"

    async def authenticated(self, principal: KeyPrincipal) -> None:
        if self.auth_timer:
            self.auth_timer.cancel()
        limit = self.limits["MAX_CONNECTIONS_PER_KEY"]
        self.presence_key = (principal.key_id, principal.key_public_id)
        self.presence_token = await presence().acquire(principal.key_public_id, limit)
        if self.presence_token is None:
            await self.send_frame(protocol.error_frame(
                ErrorCode.RATE_LIMITED, f"this API key already has {limit} open connections",
                retryable=True, retry_after_ms=5000))
            await self.close_with(CloseCode.TOO_MANY_CONNECTIONS)
            return
        self.principal = principal
        freshness().key_opened(principal.key_id)  # re-checked in the background while open
        # Control messages (revocation, suspension) reach this socket from any process.
        await control_listener().join(self, control_groups(principal))
        await self.send_frame(protocol.auth_ok_frame(
            org=principal.org_slug, key_prefix=principal.key_prefix,
            limits={
                "max_message_bytes": self.limits["MAX_MESSAGE_BYTES"],
                "max_in_flight": self.limits["MAX_IN_FLIGHT"],
                "max_connections_per_key": self.limits["MAX_CONNECTIONS_PER_KEY"],
                "heartbeat_seconds": self.limits["HEARTBEAT_SECONDS"],
                "auth_timeout_seconds": self.limits["AUTH_TIMEOUT_SECONDS"],
            },
            budget=await remaining_for_key(principal) if principal.budget_in_protocol else None,
        ))

    async def gateway_access_revoked(self, event: dict) -> None:
        """Channel-layer control message: this key was revoked or its org suspended."""
        await self.revoke_access(event.get("reason", "access revoked"))

    async def revoke_access(self, reason: str) -> None:
        if self.closed or self.revoking:
            return
        self.revoking = True  # the control message and the background re-check may both arrive
        await self.stop_requests("revoked")
        await self.send_frame(protocol.error_frame(ErrorCode.UNAUTHORIZED, f"access revoked: {reason}"))
        await self.close_with(CloseCode.AUTH_FAILED)

    async def shut_down(self, deadline: float) -> None:
        """Server shutdown: let in-flight requests finish until `deadline` (monotonic), then close 1001."""
        loop = asyncio.get_running_loop()
        tasks = [s.task for s in self.requests.values() if s.task and not s.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        await self.stop_requests("shutdown", timeout=2)
        await self.close_with(CloseCode.GOING_AWAY)

    async def reject_auth(self, reason: str) -> None:
        await self.send_frame(protocol.error_frame(ErrorCode.UNAUTHORIZED, f"authentication failed: {reason}"))
        await self.close_with(CloseCode.AUTH_FAILED)

    async def reject_throttled(self, throttled: AuthThrottled) -> None:
        """Too many failed authentications from this address or with this key (gateway/auth_throttle.py)."""
        await self.send_frame(protocol.error_frame(ErrorCode.RATE_LIMITED, throttled.message, retryable=True,
                                                   retry_after_ms=throttled.retry_after_ms))
        await self.close_with(CloseCode.TOO_MANY_CONNECTIONS)  # 4429: too many attempts

    async def expire_unauthenticated(self) -> None:
        await asyncio.sleep(self.limits["AUTH_TIMEOUT_SECONDS"])
        if self.principal is None and not self.closed:
            await self.send_frame(protocol.error_frame(
                ErrorCode.UNAUTHORIZED, "no authentication within the time allowed"))
            await self.close_with(CloseCode.AUTH_TIMEOUT)

    async def close_with(self, code: CloseCode) -> None:
        if not self.closed:
            self.closed = True
            await self.close(code=int(code))

    async def send(self, text_data=None, bytes_data=None, close=False, push=False) -> None:
        """channels' send; `push` asks the server to write the frame to the socket now
        (with what is queued before it) instead of at its event loop's next turn."""
        if text_data is None or bytes_data is not None or close:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
            return
        # What channels' send does for a text frame, without its two layers of coroutines.
        message = {"type": "websocket.send", "text": text_data}
        if push:
            message[PUSH] = True
        await self.base_send(message)

    async def send_frame(self, frame: dict) -> None:
        if self.closed:
            return
        try:
            # The first token of a response goes out at once: the task serving it may
            # go on reading an upstream burst without giving the loop back, and the
            # server would write nothing until it did. Later frames are coalesced.
            await self.send(text_data=protocol.encode(frame),
                            push=frame["type"] == "llm_token" and frame["seq"] == 0)
        except Disconnected:
            # The client's socket closed a moment ago and the server has not told this
            # consumer yet: not a failure of the request. Sending stops here; the
            # disconnect arriving next stops the requests and bills them (client_gone).
            self.closed = True


@contextlib.contextmanager
def _logged(step: str):
    """Run one step of releasing a connection; log a failure and go on with the next."""
    try:
        yield
    except Exception:
        log.exception("releasing a connection: %s failed", step)
