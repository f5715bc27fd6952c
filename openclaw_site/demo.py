"""The demo tenant: an org, an admin login, a fresh API key, and the mock models.

Idempotent: running it again reuses everything and issues one new key (a
secret is only ever shown once).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from catalog.models import Deployment, ProviderCredential, Route, RouteCandidate
from openclaw_site.env import read_or_create_secret_file
from tenants.audit import record_event
from tenants.models import AuditEvent, Membership, Organization
from tenants.services import api_key_create, org_create, user_membership_set

DEMO_ORG = "demo"
ADMIN_USERNAME = "admin"

# Names and list prices of the article's examples, served by the mock LLM:
# gpt-4-turbo cheap and fast, claude-3-opus expensive and slower.
DEMO_MODELS = [
    {"name": "gpt-4-turbo", "input": Decimal("10"), "output": Decimal("30"), "directives": "rate=40 ttft_ms=150",
     "context_window": 128_000},
    {"name": "claude-3-opus", "input": Decimal("15"), "output": Decimal("75"), "directives": "rate=20 ttft_ms=400",
     "context_window": 200_000},
]

# The article's routing example: clients that send "best_available_general" get the
# deployment with the lowest observed time to first token (gpt-4-turbo on the mock),
# and the other one when it fails before its first token.
DEMO_ROUTE = {"alias": "best_available_general", "strategy": Route.Strategy.LATENCY,
              "candidates": ["gpt-4-turbo", "claude-3-opus"]}


@dataclass(frozen=True)
class DemoSetup:
    org: Organization
    admin_username: str
    admin_password: str
    api_key: str
    models: list[str]
    routes: list[str]


def demo_setup(*, mock_api_base: str) -> DemoSetup:
    with transaction.atomic():
        org = Organization.objects.filter(slug=DEMO_ORG).first() or org_create(
            slug=DEMO_ORG, name="Demo Organization", tier=Organization.Tier.PRO, actor="demo setup"
        )
        password = read_or_create_secret_file(settings.DATA_DIR / "admin_password", lambda: secrets.token_urlsafe(12))
        User = get_user_model()
        if not User.objects.filter(username=ADMIN_USERNAME).exists():
            user_membership_set(org=org, username=ADMIN_USERNAME, role=Membership.Role.OWNER, password=password,
                                actor="demo setup")
            User.objects.filter(username=ADMIN_USERNAME).update(is_staff=True, is_superuser=True)
        credential = ProviderCredential.objects.filter(org__isnull=True, name="mock").first()
        if credential is None:
            credential = ProviderCredential(name="mock", provider="mock")
            credential.set_secret("mock-key-not-a-secret")
            credential.save()
            record_event(org=None, actor_type=AuditEvent.ActorType.SYSTEM, actor="demo setup",
                         action="credential.create", target_type="credential", target_id=str(credential.public_id))
        for spec in DEMO_MODELS:
            deployment, created = Deployment.objects.get_or_create(
                org=None, name=spec["name"],
                defaults=dict(
                    provider="mock", litellm_model=f"openai/{spec['name']}", api_base=mock_api_base,
                    credential=credential, input_price_per_mtok=spec["input"], output_price_per_mtok=spec["output"],
                    context_window=spec["context_window"], max_output_tokens=4096,
                    extra_params={"extra_headers": {"X-Mock-Directives": spec["directives"]}},
                ),
            )
            if not created and deployment.provider == "mock" and deployment.api_base != mock_api_base:
                # The mock LLM moved to another port: follow it.
                deployment.api_base = mock_api_base
                deployment.save(update_fields=["api_base"])
            if created:
                record_event(org=None, actor_type=AuditEvent.ActorType.SYSTEM, actor="demo setup",
                             action="deployment.create", target_type="deployment",
                             target_id=str(deployment.public_id), data={"name": spec["name"]})
        _demo_route_get_or_create()
        issued = api_key_create(org=org, name="demo key", actor="demo setup")
    return DemoSetup(org=org, admin_username=ADMIN_USERNAME, admin_password=password, api_key=issued.raw,
                     models=[spec["name"] for spec in DEMO_MODELS], routes=[DEMO_ROUTE["alias"]])


def _demo_route_get_or_create() -> None:
    """Create the demo route once; an admin's later edits to it are kept."""
    route, created = Route.objects.get_or_create(org=None, alias=DEMO_ROUTE["alias"],
                                                 defaults={"strategy": DEMO_ROUTE["strategy"]})
    if not created:
        return
    for position, name in enumerate(DEMO_ROUTE["candidates"]):
        RouteCandidate.objects.create(route=route, position=position,
                                      deployment=Deployment.objects.get(org=None, name=name))
    record_event(org=None, actor_type=AuditEvent.ActorType.SYSTEM, actor="demo setup", action="route.create",
                 target_type="route", target_id=str(route.public_id), data={"alias": route.alias})
