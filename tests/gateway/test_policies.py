"""Routing policies: rules on content, metadata and tier pick the route, live."""
import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from catalog.models import RoutingPolicy
from tests.support.consumer import authed, usage_of
from tests.support.catalog import make_route  # noqa: F401  (fixture)
from tests.support.frames import collect, send_frame

pytestmark = pytest.mark.django_db(transaction=True)

RULES = [
    {"name": "legal questions", "when": {"keywords": ["request.prompt", ["legal", "lawsuit"]]},
     "then": {"route": "legal_expert"}},
    {"name": "urgent goes premium", "when": {"eq": ["metadata.priority", "high"]},
     "then": {"deployment": "premium"}},
    {"name": "enterprise tier", "when": {"eq": ["org.tier", "enterprise"]}, "then": {"deployment": "premium"}},
]


@pytest.fixture
def routed(org, make_deployment, make_route):
    make_deployment("general")
    make_deployment("premium")
    make_route("legal_expert", "fallback", [make_deployment("legal-model", tags=["legal"])])
    return RoutingPolicy.objects.create(org=org, rules=RULES)


async def ask(comm, rid, prompt, **extra):
    await send_frame(comm, {"type": "llm_request", "request_id": rid, "model": "general",
                            "prompt": f"{prompt} [[mock tokens=2]]", **extra})
    return (await collect(comm))[rid]


async def test_a_content_rule_sends_a_matching_prompt_to_its_route(issued_key, routed):
    comm = await authed(issued_key)
    start = (await ask(comm, "legal", "Is this contract legal in France?"))[0]
    assert start["route"]["route"] == "legal_expert" and start["route"]["deployment"] == "legal-model"
    assert start["route"]["rule"] == "legal questions"
    assert start["model"] == "general"  # what the client asked for
    plain = (await ask(comm, "plain", "Tell me about illegally parked cars"))[0]  # whole words only
    assert plain["route"]["deployment"] == "general" and plain["route"]["rule"] is None
    await comm.disconnect()
    assert (await usage_of("legal")).route["rule"] == "legal questions"


async def test_a_metadata_priority_rule_changes_the_deployment(issued_key, routed):
    comm = await authed(issued_key)
    frames = await ask(comm, "urgent", "hello", metadata={"priority": "high", "user_id": "u1"})
    assert frames[0]["route"]["deployment"] == "premium" and frames[0]["route"]["rule"] == "urgent goes premium"
    await comm.disconnect()


async def test_an_org_tier_rule_applies_and_edits_take_effect_without_restart(issued_key, routed, org):
    comm = await authed(issued_key)
    assert (await ask(comm, "before", "hello"))[0]["route"]["deployment"] == "general"

    def upgrade():
        org.tier = "enterprise"
        org.save(update_fields=["tier"])

    await sync_to_async(upgrade)()
    # The tier is part of the key's principal: a new connection sees it.
    await comm.disconnect()
    comm = await authed(issued_key)
    assert (await ask(comm, "after", "hello"))[0]["route"]["deployment"] == "premium"

    def drop_rules():
        RoutingPolicy.objects.filter(org=org).update(rules=[])

    await sync_to_async(drop_rules)()
    import asyncio

    await asyncio.sleep(1.1)  # the compiled policy is cached for a second
    assert (await ask(comm, "dropped", "hello"))[0]["route"]["deployment"] == "general"
    await comm.disconnect()


def test_an_invalid_policy_is_refused_with_every_problem_named(org):
    policy = RoutingPolicy(org=org, rules=[
        {"name": "bad regex", "when": {"regex": ["request.prompt", "(a)\\1"]}, "then": {"route": "x"}},
        {"name": "bad field", "when": {"eq": ["nowhere.field", 1]}, "then": {"route": "x"}},
    ])
    with pytest.raises(ValidationError) as caught:
        policy.full_clean()
    messages = caught.value.message_dict["rules"]
    assert len(messages) == 2
    assert messages[0].startswith("rules[0].when.regex[1]") and messages[1].startswith("rules[1].when.eq[0]")


def test_a_policy_naming_an_unknown_route_or_another_orgs_deployment_is_refused(org, other_org, make_deployment):
    make_deployment("theirs", org=other_org)
    policy = RoutingPolicy(org=org, rules=[
        {"name": "a", "when": True, "then": {"route": "nowhere"}, "stop": False},
        {"name": "b", "when": True, "then": {"deployment": "theirs"}},
    ])
    with pytest.raises(ValidationError) as caught:
        policy.full_clean()
    assert caught.value.message_dict["rules"] == [
        "rules[0].then.route: no route named 'nowhere' for this organization",
        "rules[1].then.deployment: no deployment named 'theirs' for this organization",
    ]
