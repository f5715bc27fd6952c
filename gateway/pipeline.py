"""One request's path, from a validated llm_request to its usage record.

protocol frame -> resolve (access + routing) -> token control -> provider
stream -> frames -> usage. The consumer runs `serve_request` in its own task and
hands it a `send` callable; nothing here knows about sockets.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable

from django.conf import settings
from django.utils import timezone

from billing.budgets import BudgetBusy, BudgetRefusal
from billing.models import UsageRecord
from billing.recorder import usage_recorder
from billing.usage import UsageDraft
from catalog.money import Prices, format_usd, request_cost
from catalog.targets import Target
from gateway import protocol
from gateway.budgeting import refusal_error, release_attempt, remaining_after, reserve_attempt
from gateway.health import health
from gateway.policies import apply_policies
from gateway.protocol import ErrorCode, GatewayError, LlmRequestFrame
from gateway.providers import UpstreamCall, UpstreamError, UpstreamStream
from gateway.ratelimits import count_completion, limiter, request_limits
from gateway.routing import RouteDecision, resolve_model_cached
from gateway.tokens import (FittedPrompt, PromptTooLong, clamp_max_tokens, count_completion_tokens,
                            count_prompt_tokens, fit_prompt, model_max_output_tokens)
from tenants.access import KeyPrincipal

log = logging.getLogger(__name__)

Send = Callable[[dict], Awaitable[None]]
MAX_BUDGET_FALLBACKS = 3  # budget fallback routes followed for one request (cycles are refused on save)
Status = UsageRecord.Status
Source = UsageRecord.TokenSource


@dataclass
class RequestState:
    """What the connection knows about one in-flight request."""

    request_id: str
    task: asyncio.Task | None = None
    # Why the task was stopped: "cancelled" (the client's cancel frame: end
    # frame), "client_gone" (socket closed: nothing to send), "revoked" (key or
    # org lost access: 401 frame), "shutdown" (server draining: 503 frame).
    stop_reason: str | None = None


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _new_draft(principal: KeyPrincipal, frame: LlmRequestFrame, request_id: str, **fields) -> UsageDraft:
    """The usage record of one request, keyed by a fresh UUID."""
    return UsageDraft(request_id=uuid.uuid4(), client_request_id=request_id, org_id=principal.org_id,
                      api_key_id=principal.key_id, requested_model=frame.model,
                      end_user=frame.metadata.user_id or "", **fields)


async def serve_request(*, principal: KeyPrincipal, frame: LlmRequestFrame, state: RequestState, send: Send) -> None:
    request_id = state.request_id
    t0 = time.monotonic()
    draft = _new_draft(principal, frame, request_id)
    text_parts: list[str] = []
    started = False
    model = ""  # the litellm model string, for counting tokens the provider did not report
    decision: RouteDecision | None = None
    counted_scopes: list[str] = []  # token rate limits to charge the completion to
    try:
        if frame.session_id is not None:
            raise GatewayError(ErrorCode.BAD_REQUEST, "sessions not enabled", request_id=request_id)
        messages = frame.chat_messages()
        policy = await apply_policies(principal, frame, messages)
        name, fallbacks = frame.model, []
        while True:
            # A filtered budget at its limit may send the request to a cheaper
            # route (its fallback): resolve that one and try again.
            # The key's allow-list holds for every name resolved here: the one sent,
            # a rule's choice (skipped if outside it) and a budget's fallback route.
            decision = await resolve_model_cached(principal, name, request_id=request_id,
                                                  policy=policy if not fallbacks else None)
            decision.budget_fallbacks = fallbacks
            prompt_tokens = await count_prompt_tokens(decision.target.litellm_model, messages, org=principal.org_id)
            draft.prompt_tokens, draft.prompt_tokens_source = prompt_tokens, Source.COUNTED
            draft.via_route_id = decision.route_id
            if not fallbacks:
                limits = request_limits(principal, draft.end_user, decision)
                if limits:
                    await limiter().admit(limits, prompt_tokens)
                    counted_scopes = [limit.scope for limit in limits if limit.tpm]
            try:
                opened = await _open_first_token(decision, frame, principal, messages, prompt_tokens, draft)
                break
            except BudgetRefusal as exc:
                # Used up: 402. Busy (reservations in flight, still there after the
                # bounded wait): 429 budget_busy, or the fallback route if it has one.
                if exc.fallback_route is None or len(fallbacks) >= MAX_BUDGET_FALLBACKS:
                    raise refusal_error(exc, request_id) from None
                if not principal.may_request(exc.fallback_route):
                    # A fallback this key may not use is no way out: the budget refuses as it would alone.
                    error = refusal_error(exc, request_id)
                    error.message = f"{error.message}; its fallback route is not among this API key's allowed models"
                    raise error from None
                fallbacks.append({"budget": exc.ref.rule.name, "from": decision.route or decision.target.name,
                                  "to": exc.fallback_route})
                name = exc.fallback_route
        params = frame.parameters
        stream, first_text, target, max_tokens = opened.stream, opened.first_text, opened.target, opened.max_tokens
        prompt_tokens = draft.prompt_tokens = opened.prompt.prompt_tokens
        model = target.litellm_model
        draft.deployment_id, draft.deployment_name, draft.provider = target.deployment_id, target.name, target.provider
        draft.route = decision.explain(served_by=target)
        draft.input_price_per_mtok = target.prices.input_per_mtok
        draft.output_price_per_mtok = target.prices.output_per_mtok
        draft.max_tokens = max_tokens
        start_frame = protocol.response_start_frame(
            request_id=request_id, model=frame.model, route=draft.route, prompt_tokens=prompt_tokens,
            max_tokens=max_tokens, truncated=opened.prompt.removed_tokens > 0,
            truncated_tokens=opened.prompt.removed_tokens,
        )
        lease = draft.lease
        stopped_at_max = False
        try:
            seq = 0
            text = first_text
            deltas = stream.deltas() if first_text is not None else None
            while text is not None:
                if state.stop_reason:
                    raise asyncio.CancelledError  # stop was asked for; do not depend on the cancel landing
                if not started:
                    # Sent with the first token, not before: until then the
                    # request could still fail over without the client noticing.
                    draft.first_token_ms = _ms(t0)
                    await send(start_frame)
                    started = True
                if len(text_parts) >= max_tokens:
                    # More chunks than max_tokens: the provider overran it. The
                    # reservation's worst case holds only if we stop here.
                    stopped_at_max = True
                    break
                text_parts.append(text)
                if lease is not None:
                    lease.completion_tokens = len(text_parts)  # the checkpoint a lost process is billed from
                if params.stream:
                    await send(protocol.token_frame(request_id=request_id, seq=seq, content=text))
                    seq += 1
                text = await anext(deltas, None)
            result = stream.result
        finally:
            await stream.close()
            health.end_attempt(target.deployment_id, stream.attempt_id)
            health.record_tokens(target.deployment_id, draft.prompt_tokens + len(text_parts))
        if not started:
            await send(start_frame)  # an empty completion still gets start and end
            started = True
        if not params.stream and text_parts:
            await send(protocol.token_frame(request_id=request_id, seq=0, content="".join(text_parts)))
        draft.provider_response_id = protocol.storable(result.response_id)[:200]
        finish = "length" if result.finish_reason == "length" or stopped_at_max else "stop"
        _bill(draft, model, text_parts, result.prompt_tokens, result.completion_tokens)
        draft.finish_reason = finish
        draft.status = Status.LENGTH if finish == "length" else Status.COMPLETED
        draft.total_ms = _ms(t0)
        await send(_end_frame(draft, request_id, principal))
    except asyncio.CancelledError:
        reason = state.stop_reason or "client_gone"
        draft.status = Status.CLIENT_GONE if reason == "client_gone" else Status.CANCELLED
        draft.finish_reason = "cancelled"
        _bill(draft, model, text_parts)
        draft.total_ms = _ms(t0)
        with _quietly():
            if reason == "cancelled":
                await send(_end_frame(draft, request_id, principal))
            elif reason == "revoked":
                draft.error_code = int(ErrorCode.UNAUTHORIZED)
                await send(protocol.error_frame(ErrorCode.UNAUTHORIZED, "request stopped: access revoked",
                                                request_id=request_id))
            elif reason == "shutdown":
                draft.error_code = int(ErrorCode.NO_HEALTHY_DEPLOYMENT)
                await send(protocol.error_frame(
                    ErrorCode.NO_HEALTHY_DEPLOYMENT, "request stopped: this server is shutting down",
                    request_id=request_id, retryable=True))
        raise
    except GatewayError as exc:
        draft.status, draft.error_code = Status.REJECTED, int(exc.code)
        # Refused before any upstream call: no tokens (the prompt counted for
        # rate limits and the budget check is not usage), nothing to pay.
        _bill(draft, model, text_parts)
        draft.total_ms = _ms(t0)
        exc.request_id = request_id
        await send(exc.frame())
    except UpstreamError as exc:
        if decision is not None and not draft.route:
            draft.route = decision.explain()  # every attempt failed: keep them with the usage
        draft.status = Status.UPSTREAM_TIMEOUT if exc.code == ErrorCode.UPSTREAM_TIMEOUT else Status.UPSTREAM_ERROR
        draft.error_code, draft.finish_reason = int(exc.code), "error"
        _bill(draft, model, text_parts)
        draft.total_ms = _ms(t0)
        message = exc.message if not started else f"{exc.message} after {len(text_parts)} tokens were sent"
        await send(protocol.error_frame(exc.code, message, request_id=request_id,
                                        retryable=exc.retryable and not started, retry_after_ms=exc.retry_after_ms))
    except Exception:
        log.exception("request %s failed", draft.request_id)
        draft.status, draft.error_code, draft.finish_reason = Status.INTERNAL_ERROR, 500, "error"
        _bill(draft, model, text_parts)
        draft.total_ms = _ms(t0)
        with _quietly():
            await send(protocol.error_frame(ErrorCode.INTERNAL, "internal error; the request was not completed",
                                            request_id=request_id))
    finally:
        # Not awaited, so the task's cancellation cannot lose it: every ending
        # leaves exactly one record, written off the token path; the request's
        # budget reservation is settled to its cost when the record is written.
        draft.ended_at = timezone.now()
        usage_recorder.submit(draft)
        count_completion(counted_scopes, draft.completion_tokens)


def record_refusal(*, principal: KeyPrincipal, frame: LlmRequestFrame, error: GatewayError) -> None:
    """The one usage record of a request the connection refused before serving it
    (too many in flight, server shutting down): rejected, with no tokens."""
    now = timezone.now()
    usage_recorder.submit(_new_draft(principal, frame, error.request_id, started_at=now, ended_at=now,
                                     status=Status.REJECTED, error_code=int(error.code), total_ms=0))


@dataclass
class Opened:
    """An attempt that produced its first token (or ended cleanly with none)."""

    stream: UpstreamStream
    first_text: str | None
    target: Target
    max_tokens: int
    prompt: FittedPrompt


async def _shape(target: Target, frame: LlmRequestFrame, principal: KeyPrincipal, messages: list[dict],
                 prompt_tokens: int, request_id: str) -> tuple[int, FittedPrompt] | None:
    """Clamp max_tokens and fit the prompt for one deployment: (max_tokens, prompt).

    The output is clamped first (the request's, the key's, the org's, the
    deployment's and the model's own maximum); then a prompt longer than the
    context window minus that output, or than the org's input limit, is
    truncated, keeping the system prompt and the newest turns. If even those do
    not fit, the output shrinks to what the context window leaves; if nothing is
    left, GatewayError 400 with the numbers (None from a multi-candidate route:
    another deployment may have a larger window)."""
    max_tokens = clamp_max_tokens(
        requested=frame.parameters.max_tokens, default=settings.GATEWAY["DEFAULT_MAX_TOKENS"],
        deployment_max=target.max_output_tokens, key_max=principal.max_tokens_per_request,
        org_max=principal.org_max_tokens_per_request, model_max=model_max_output_tokens(target.litellm_model),
    )
    input_cap = principal.org_max_input_tokens
    room = target.context_window - max_tokens
    if input_cap:
        room = min(room, input_cap)
    try:
        return max_tokens, await fit_prompt(target.litellm_model, messages, prompt_tokens, room, org=principal.org_id)
    except PromptTooLong as exc:
        widest = target.context_window - 1 if not input_cap else min(target.context_window - 1, input_cap)
        if exc.needed <= widest:
            prompt = FittedPrompt(exc.minimal, exc.needed, prompt_tokens - exc.needed,
                                  len(messages) - len(exc.minimal))
            return min(max_tokens, target.context_window - exc.needed), prompt
        why = (f"the organization's input limit of {input_cap} tokens" if input_cap and input_cap < target.context_window
               else f"{target.name!r}'s context window of {target.context_window} tokens")
        message = (f"the prompt is {exc.needed} tokens even truncated to the system prompt and the newest turn "
                   f"(from {prompt_tokens}); {why} leaves room for at most {widest}")
        raise GatewayError(ErrorCode.BAD_REQUEST, message, request_id=request_id) from None


async def _open_first_token(decision: RouteDecision, frame: LlmRequestFrame, principal: KeyPrincipal,
                            messages: list[dict], prompt_tokens: int, draft: UsageDraft) -> Opened:
    """Try the decision's deployments in order until one produces its first token
    (or ends cleanly with none). Each attempt is shaped for its deployment (output
    clamp, prompt truncation) and first reserves its worst case against the
    budgets that apply to it. A failure before the first token gives the
    reservation back and is recorded in `decision.attempts`; if it is the
    deployment's fault it is recorded in the deployment's health and the next
    candidate is tried, otherwise (the provider refused the request's content,
    or it failed before being sent) the request ends with it."""
    request_id = draft.client_request_id
    params = frame.parameters
    last_error: UpstreamError | None = None
    last_refusal: GatewayError | BudgetRefusal | None = None
    tried = 0
    for target in decision.candidates:
        if tried >= decision.max_attempts:
            break
        try:
            max_tokens, prompt = await _shape(target, frame, principal, messages, prompt_tokens, request_id)
        except GatewayError as exc:
            if len(decision.candidates) == 1:
                raise
            last_refusal = exc
            continue
        tried += 1
        try:
            await reserve_attempt(draft=draft, principal=principal, decision=decision, target=target,
                                  prompt_tokens=prompt.prompt_tokens, max_tokens=max_tokens)
        except BudgetRefusal as exc:
            if exc.ref.rule.deployment_id is None or exc.fallback_route is not None:
                raise
            # Only this deployment's own budget is used up (or still busy after the
            # wait): another candidate may serve.
            busy = isinstance(exc, BudgetBusy)
            decision.attempts.append({"deployment": target.name,
                                      "error": f"budget {exc.ref.rule.name!r} {'busy' if busy else 'used up'}",
                                      "code": int(ErrorCode.RATE_LIMITED if busy else ErrorCode.BUDGET_EXHAUSTED)})
            if not isinstance(last_refusal, BudgetBusy):  # busy is the truer answer: a retry may fit
                last_refusal = exc
            continue
        call = UpstreamCall(
            target=target, messages=prompt.messages, max_tokens=max_tokens, temperature=params.temperature,
            top_p=params.top_p, stop=params.stop, presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty, seed=params.seed,
        )
        stream = UpstreamStream(call)
        attempt_started = time.monotonic()
        stream.attempt_id = health.begin_attempt(target.deployment_id)
        try:
            await stream.__aenter__()
            first = await anext(stream.deltas(), None)
        except UpstreamError as exc:
            await stream.close()
            health.end_attempt(target.deployment_id, stream.attempt_id)
            await release_attempt(draft)
            error = f"HTTP {exc.status}" if exc.status else ("timeout" if exc.code == ErrorCode.UPSTREAM_TIMEOUT
                                                             else "connection failure")
            decision.attempts.append({"deployment": target.name, "error": error, "code": int(exc.code)})
            if not exc.deployment_fault:
                # The provider refused this request's content (400/413/422): not the
                # deployment's failure, and another candidate would refuse it too
                # (or bill it at a higher price): the client is told at once.
                health.release_probe(target.deployment_id, stream.attempt_id)
                raise
            health.record_failure(target.deployment_id, retry_after_ms=exc.retry_after_ms)
            last_error = exc
            continue
        except BaseException:
            # Refused before it was sent (GatewayError 400: text that cannot be
            # encoded; UpstreamNotSent: our bug), or cancelled: nothing about the
            # deployment's health, and no other candidate would do better.
            await stream.close()
            health.end_attempt(target.deployment_id, stream.attempt_id)
            health.release_probe(target.deployment_id, stream.attempt_id)
            raise
        ttft_ms = (time.monotonic() - attempt_started) * 1000
        if first is None:
            health.record_success(target.deployment_id, ttft_ms)  # ended normally without a token
        else:
            health.record_first_token(target.deployment_id, ttft_ms)
            # How the rest of the stream ends counts too: a cut or a stall midway is
            # the deployment's failure, a normal end clears its failure count.
            stream.on_end = functools.partial(_stream_ended, target.deployment_id)
        return Opened(stream, first, target, max_tokens, prompt)
    if last_error is None and last_refusal is not None:
        raise last_refusal
    if last_error is None:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"the prompt ({prompt_tokens} tokens) fits no deployment of "
                           f"{frame.model!r}", request_id=request_id)
    if len(decision.attempts) > 1:
        last_error.message = f"{last_error.message} (after {len(decision.attempts)} attempts)"
    raise last_error


def _stream_ended(deployment_id: int, error: UpstreamError | None) -> None:
    """Record in the deployment's health how a stream that had produced its first
    token ended (called by the stream itself, whoever is reading it)."""
    if error is None:
        health.record_success(deployment_id)
    elif error.deployment_fault:
        health.record_failure(deployment_id, retry_after_ms=error.retry_after_ms)


def _bill(draft: UsageDraft, model: str, text_parts: list[str], provider_prompt: int | None = None,
          provider_completion: int | None = None) -> None:
    """Set the tokens and cost the request is billed for, whatever its ending:
    the provider's usage when it reported some, else the prompt as counted and
    every streamed token counted by the gateway; nothing if no deployment was
    called."""
    if draft.deployment_id is None:
        draft.prompt_tokens, draft.prompt_tokens_source = 0, Source.NONE
        return
    if provider_completion is not None:
        draft.prompt_tokens, draft.prompt_tokens_source = provider_prompt or 0, Source.PROVIDER
        draft.completion_tokens, draft.completion_tokens_source = provider_completion, Source.PROVIDER
    elif text_parts:
        # Our tokenizer can count a few more tokens than the provider produced; it
        # cannot have produced more than max_tokens (it was asked for at most
        # that, and the stream is cut if it overruns), which the reservation holds.
        counted = count_completion_tokens(model, "".join(text_parts))
        draft.completion_tokens = min(counted, draft.max_tokens) if draft.max_tokens else counted
        draft.completion_tokens_source = Source.COUNTED
    _price(draft)


def _price(draft: UsageDraft) -> None:
    if draft.input_price_per_mtok is None:
        return
    prices = Prices(draft.input_price_per_mtok, draft.output_price_per_mtok)
    draft.cost_usd = request_cost(prices, prompt_tokens=draft.prompt_tokens, completion_tokens=draft.completion_tokens)


def _end_frame(draft: UsageDraft, request_id: str, principal: KeyPrincipal) -> dict:
    return protocol.response_end_frame(
        request_id=request_id, finish_reason=draft.finish_reason, prompt_tokens=draft.prompt_tokens,
        completion_tokens=draft.completion_tokens, cost_usd=format_usd(draft.cost_usd),
        first_token_ms=draft.first_token_ms, total_ms=draft.total_ms or 0,
        budget=remaining_after(draft) if principal.budget_in_protocol else None,
    )


def _quietly():
    """Ignore failures to send a final frame to a socket that may already be gone."""
    return contextlib.suppress(Exception)
