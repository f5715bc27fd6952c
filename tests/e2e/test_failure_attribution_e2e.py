"""One tenant's bad requests never move another tenant's traffic; rules never pass an allow-list.

A real gateway process, real sockets, real HTTP through litellm to the mock LLM, two
organizations sharing a platform route (docs/routing.md "Health and fallback" and
"Allow-lists hold for what is served").
"""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.support.frames import authed_socket, collect, send_frame
from tests.support.routes import configure

pytestmark = pytest.mark.e2e

FAST = "rate=0 ttft_ms=0"

# Runs in `manage.py shell -c`: an API key (last line printed) of an org, created if needed.
_KEY_SCRIPT = """
from tenants.models import Organization
from tenants.services import api_key_create, org_create
org = Organization.objects.filter(slug=SLUG).first() or org_create(slug=SLUG, name=SLUG)
print(api_key_create(org=org, name=NAME, allowed_models=ALLOWED).raw)
"""


def issue_key(stack, slug: str, name: str, allowed: list[str] | None = None) -> str:
    script = (_KEY_SCRIPT.replace("SLUG", repr(slug)).replace("NAME", repr(name))
              .replace("ALLOWED", repr(allowed)))
    return stack.manage("shell", "-c", script).strip().splitlines()[-1]


@pytest.fixture
def clear_policy(stack):
    yield
    configure(stack, policy=[])


async def ask(ws, rid: str, model: str, prompt: str, **extra) -> list[dict]:
    await send_frame(ws, {"type": "llm_request", "request_id": rid, "model": model, "prompt": prompt, **extra})
    return (await collect(ws, timeout=30))[rid]


async def test_client_caused_failures_leave_a_shared_deployment_and_other_tenants_alone(stack, mockllm):
    configure(stack, deployments=[
        {"name": "fa-cheap", "price": "1", "directives": FAST},
        {"name": "fa-pricey", "price": "20", "directives": FAST},
    ], routes=[{"alias": "fa_general", "strategy": "cost", "candidates": ["fa-pricey", "fa-cheap"]}])
    other_key = await asyncio.to_thread(issue_key, stack, "fa-other-org", "other tenant")
    await asyncio.sleep(0.8)  # the gateway sees configuration edits within half a second

    demo = await authed_socket(stack.url(), stack.api_key)
    other = await authed_socket(stack.url(), other_key)
    try:
        # The demo org sends requests the provider refuses as malformed, more than the
        # breaker's threshold, through the shared route.
        for i in range(4):
            [error] = await ask(demo, f"fa-bad-{i}", "fa_general", "x [[mock fault=400 tag=fa-bad]]")
            assert (error["code"], error["error"], error["retryable"]) == (502, "upstream_error", False), error
            assert "HTTP 400" in error["message"] and "LEAKED" not in error["message"]
        # Each was refused by the cheap deployment and never retried on the pricier one.
        assert Counter(e["model"] for e in mockllm.events("fa-bad")) == {"fa-cheap": 4}
        # The other org's traffic on the route still goes to the cheap deployment, first try.
        for i in range(5):
            frames = await ask(other, f"fa-other-{i}", "fa_general", "hello [[mock tokens=2 tag=fa-other]]")
            start = frames[0]
            assert start["type"] == "llm_response_start" and frames[-1]["type"] == "llm_response_end", frames
            assert start["route"]["deployment"] == "fa-cheap" and start["route"]["attempts"] == [], start["route"]
        assert Counter(e["model"] for e in mockllm.events("fa-other")) == {"fa-cheap": 5}
        # A lone surrogate in the prompt is the client's 400, before any upstream call.
        [error] = await ask(demo, "fa-surrogate", "fa_general", "hello \ud800 [[mock tag=fa-surrogate]]")
        assert (error["code"], error["error"], error["retryable"]) == (400, "bad_request", False), error
        assert mockllm.events("fa-surrogate") == []
    finally:
        await demo.close()
        await other.close()
    rows = stack.wait_for_rows("SELECT status, error_code FROM billing_usagerecord WHERE client_request_id = %s",
                               ("fa-bad-0",))
    assert rows and tuple(rows[0]) == ("upstream_error", 502)


async def test_a_rule_cannot_serve_a_deployment_outside_the_keys_allow_list(stack, mockllm, clear_policy):
    configure(stack, deployments=[{"name": "fa-premium", "price": "30", "directives": FAST}], policy=[
        {"name": "urgent goes premium", "when": {"eq": ["metadata.priority", "urgent"]},
         "then": {"deployment": "fa-premium"}},
    ])
    limited_key = await asyncio.to_thread(issue_key, stack, "demo", "turbo only", ["gpt-4-turbo"])
    await asyncio.sleep(0.8)
    urgent = {"priority": "urgent"}
    limited = await authed_socket(stack.url(), limited_key)
    unrestricted = await authed_socket(stack.url(), stack.api_key)
    try:
        frames = await ask(limited, "fa-limited", "gpt-4-turbo", "hi [[mock tokens=2 tag=fa-limited]]",
                           metadata=urgent)
        assert frames[-1]["type"] == "llm_response_end", frames
        assert frames[0]["route"]["deployment"] == "gpt-4-turbo" and frames[0]["route"]["rule"] is None
        assert Counter(e["model"] for e in mockllm.events("fa-limited")) == {"gpt-4-turbo": 1}
        # The rule is live: a key without an allow-list is sent where it says.
        frames = await ask(unrestricted, "fa-open", "gpt-4-turbo", "hi [[mock tokens=2 tag=fa-open]]",
                           metadata=urgent)
        assert frames[0]["route"]["deployment"] == "fa-premium", frames[0]
        assert frames[0]["route"]["rule"] == "urgent goes premium"
        # Naming the deployment directly is refused outright.
        [error] = await ask(limited, "fa-direct", "fa-premium", "hi")
        assert (error["code"], error["error"]) == (403, "forbidden")
    finally:
        await limited.close()
        await unrestricted.close()
    rows = stack.wait_for_rows("SELECT deployment_name FROM billing_usagerecord WHERE client_request_id = %s",
                               ("fa-limited",))
    assert rows and rows[0][0] == "gpt-4-turbo"
