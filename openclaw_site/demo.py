"""The demo tenant: an org, an admin login, a dashboard login, a fresh API key, the mock
models, and (under `make run`) a week of sample traffic.

Idempotent: running it again reuses everything and issues one new key (a
secret is only ever shown once). The sample traffic is written once, when the
demo org has no usage yet.
"""
from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from billing.models import Budget, UsageRecord
from billing.rollups import HOUR, usage_rollup_hours
from billing.services import usage_records_write
from billing.usage import UsageDraft
from catalog.models import Deployment, ProviderCredential, Route, RouteCandidate
from catalog.money import Prices, request_cost
from openclaw_site.env import read_or_create_secret_file
from tenants.audit import record_event
from tenants.models import AuditEvent, Membership, Organization
from tenants.services import api_key_create, org_create, user_membership_set

DEMO_ORG = "demo"
ADMIN_USERNAME = "admin"
# The dashboard's demo logins: an owner and an auditor of the demo org, not staff (the
# admin is for platform operators). They share one generated password.
OWNER_USERNAME = "demo-owner"
AUDITOR_USERNAME = "demo-auditor"
SECOND_KEY_NAME = "demo backend"

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
    dashboard_username: str
    dashboard_password: str
    api_key: str
    models: list[str]
    routes: list[str]


def demo_setup(*, mock_api_base: str, sample_traffic: bool = False) -> DemoSetup:
    """Set up (or reuse) the demo tenant; with `sample_traffic`, also a week of usage
    the first time, so the dashboard has something to show."""
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
        dashboard_password = read_or_create_secret_file(settings.DATA_DIR / "demo_password",
                                                        lambda: secrets.token_urlsafe(12))
        if not User.objects.filter(username=OWNER_USERNAME).exists():
            user_membership_set(org=org, username=OWNER_USERNAME, role=Membership.Role.OWNER,
                                email="demo-owner@example.com", password=dashboard_password, actor="demo setup")
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
        if sample_traffic and not UsageRecord.objects.filter(org=org).exists():
            demo_traffic_seed(org=org, password=dashboard_password)
    return DemoSetup(org=org, admin_username=ADMIN_USERNAME, admin_password=password,
                     dashboard_username=OWNER_USERNAME, dashboard_password=dashboard_password, api_key=issued.raw,
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


# --- Sample traffic ------------------------------------------------------------------------
SAMPLE_REQUESTS = 40
SAMPLE_DAYS = 7
_END_USERS = ["user-17", "user-42", "user-58", "support-bot", ""]
_PROMPTS = ["a short poem about a rainy day", "summarise this support ticket", "translate to French",
            "classify this review", "draft a reply"]


def demo_traffic_seed(*, org: Organization, password: str, now: datetime | None = None) -> int:
    """A week of plausible usage for the demo org, written like the gateway writes it, plus
    the changes people make: a second key, an auditor, a monthly budget (each audited).
    Deterministic for a given `now`; returns the number of usage records written."""
    now = now or datetime.now(timezone.utc)
    rng = random.Random(20261201)
    with transaction.atomic():
        backend = api_key_create(org=org, name=SECOND_KEY_NAME, actor=OWNER_USERNAME,
                                 actor_type=AuditEvent.ActorType.USER).api_key
        keys = [backend, *org.api_keys.exclude(pk=backend.pk).order_by("created_at")[:1]]
        if not get_user_model().objects.filter(username=AUDITOR_USERNAME).exists():
            user_membership_set(org=org, username=AUDITOR_USERNAME, role=Membership.Role.AUDITOR,
                                email="demo-auditor@example.com", password=password, actor=OWNER_USERNAME)
        if not Budget.objects.filter(org=org).exists():
            budget = Budget.objects.create(org=org, name="Monthly spend", window=Budget.Window.MONTH,
                                           limit_usd=Decimal("25"), soft_threshold_percent=80)
            record_event(org=org, actor_type=AuditEvent.ActorType.USER, actor=OWNER_USERNAME,
                         action="budget.create", target_type="budget", target_id=str(budget.public_id),
                         data={"name": budget.name, "window": budget.window, "limit_usd": "25"})
        deployments = {d.name: d for d in Deployment.objects.filter(org=None, name__in=[m["name"] for m in DEMO_MODELS])}
        route = Route.objects.filter(org=None, alias=DEMO_ROUTE["alias"]).first()
        today = datetime.combine(now.date(), time.min, tzinfo=timezone.utc)
        drafts = []
        for n in range(SAMPLE_REQUESTS):
            # A few today (so today's figures are not empty), the rest over the past week.
            if n < 6:
                started = today + (now - today) * rng.random()
            else:
                started = now - timedelta(seconds=rng.randint(0, SAMPLE_DAYS * 86400))
            drafts.append(_sample_draft(n, rng, org=org, key=rng.choice(keys), started=started,
                                        deployments=deployments, route=route))
        usage_records_write(drafts)
        moments = [draft.started_at for draft in drafts]
        usage_rollup_hours(min(moments), max(moments) + HOUR)
    return len(drafts)


def _sample_draft(n: int, rng: random.Random, *, org, key, started, deployments, route) -> UsageDraft:
    via_route = route is not None and rng.random() < 0.3
    name = "gpt-4-turbo" if via_route or rng.random() < 0.6 else "claude-3-opus"
    deployment = deployments[name]
    prompt, completion = rng.randint(40, 1500), rng.randint(20, 700)
    status, finish, error_code = UsageRecord.Status.COMPLETED, "stop", None
    if n in (7, 19):
        status, completion, finish, error_code = UsageRecord.Status.UPSTREAM_ERROR, 0, "", 502
    elif n == 23:
        status, completion, finish, error_code = UsageRecord.Status.UPSTREAM_TIMEOUT, 0, "", 504
    elif n == 31:
        status, completion, finish = UsageRecord.Status.CANCELLED, completion // 4, "cancelled"
    elif n == 11:
        status, finish = UsageRecord.Status.LENGTH, "length"
    prices = Prices(deployment.input_price_per_mtok, deployment.output_price_per_mtok)
    first_token_ms = rng.randint(120, 450) if completion else None
    total_ms = (first_token_ms or rng.randint(300, 2000)) + completion * rng.randint(20, 50)
    return UsageDraft(
        request_id=uuid.uuid4(), client_request_id=f"demo-{n}", org_id=org.pk, api_key_id=key.pk,
        requested_model=DEMO_ROUTE["alias"] if via_route else name, end_user=rng.choice(_END_USERS),
        started_at=started, ended_at=started + timedelta(milliseconds=total_ms), status=status,
        finish_reason=finish, error_code=error_code, deployment_id=deployment.pk, deployment_name=name,
        provider="mock", via_route_id=route.pk if via_route else None,
        route={"route": route.alias, "strategy": route.strategy, "deployment": name} if via_route else {},
        prompt_tokens=prompt, completion_tokens=completion,
        prompt_tokens_source=UsageRecord.TokenSource.PROVIDER,
        completion_tokens_source=UsageRecord.TokenSource.PROVIDER if completion else UsageRecord.TokenSource.NONE,
        input_price_per_mtok=prices.input_per_mtok, output_price_per_mtok=prices.output_per_mtok,
        cost_usd=request_cost(prices, prompt_tokens=prompt, completion_tokens=completion),
        max_tokens=1024, first_token_ms=first_token_ms, total_ms=total_ms,
    )
