"""Defining mock deployments, routes and routing policies in a running stack's database.

The stack's gateway is another process, so definitions go through `manage.py shell`
(the same ORM calls an admin's save makes, so the configuration-version triggers fire
and every gateway process sees the change within half a second).
"""
from __future__ import annotations

import json

# Runs inside `manage.py shell -c`; SPEC is replaced by the JSON of the definition.
_SCRIPT = """
import json
from decimal import Decimal
from catalog.models import Deployment, ProviderCredential, Route, RouteCandidate, RoutingPolicy
from openclaw_site.demo import DEMO_ORG
from tenants.models import Organization

spec = json.loads(SPEC)
credential = ProviderCredential.objects.get(name="mock", org=None)
api_base = Deployment.objects.get(name="gpt-4-turbo", org=None).api_base
for d in spec.get("deployments", []):
    price = Decimal(d.get("price", "1"))
    Deployment.objects.update_or_create(name=d["name"], org=None, defaults=dict(
        provider="mock", litellm_model="openai/" + d["name"], api_base=api_base, credential=credential,
        input_price_per_mtok=price, output_price_per_mtok=price, tags=d.get("tags", []),
        max_concurrency=d.get("max_concurrency"), enabled=True,
        extra_params={"extra_headers": {"X-Mock-Directives": d.get("directives", "")}}))
for r in spec.get("routes", []):
    route, _ = Route.objects.update_or_create(alias=r["alias"], org=None, defaults=dict(
        strategy=r["strategy"], required_tags=r.get("required_tags", []), enabled=True))
    route.candidates.all().delete()
    for position, c in enumerate(r["candidates"]):
        c = {"name": c} if isinstance(c, str) else c
        RouteCandidate.objects.create(route=route, position=position, weight=c.get("weight", 1),
                                      deployment=Deployment.objects.get(name=c["name"], org=None))
if "policy" in spec:
    org = Organization.objects.get(slug=DEMO_ORG)
    RoutingPolicy.objects.update_or_create(org=org, defaults={"rules": spec["policy"]})
"""


def configure(stack, *, deployments: list[dict] = (), routes: list[dict] = (), policy: list | None = None) -> None:
    """Create or replace platform deployments on the mock LLM, platform routes over them,
    and (when given) the demo org's routing policy.

    deployment: {"name", optional "price" (per million tokens, in and out), "tags",
                 "directives" (mock directives sent as a header), "max_concurrency"}
    route: {"alias", "strategy", optional "required_tags", "candidates": [name | {"name", "weight"}]}
    policy: the rule list (docs/routing-rules.md); [] clears it.
    """
    spec: dict = {"deployments": list(deployments), "routes": list(routes)}
    if policy is not None:
        spec["policy"] = policy
    stack.manage("shell", "-c", _SCRIPT.replace("SPEC", repr(json.dumps(spec))))


def define_route(stack, alias: str, strategy: str, candidates: list[dict]) -> None:
    """A route over new mock deployments, one per candidate spec (see `configure`)."""
    configure(stack, deployments=candidates,
              routes=[{"alias": alias, "strategy": strategy, "candidates": [c["name"] for c in candidates]}])
