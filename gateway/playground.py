"""What the playground page offers: the model and route names an org can request."""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q

from catalog.models import Deployment, Route
from tenants.models import Organization


@dataclass(frozen=True)
class PlaygroundName:
    name: str  # what goes in llm_request.model
    kind: str  # "route" or "model"
    platform: bool


def playground_names(org: Organization) -> list[PlaygroundName]:
    """Enabled routes and deployments the org can name (its own and the platform's),
    routes first. A name is listed once, as what it resolves to: org route > org
    deployment > platform route > platform deployment (gateway.routing.find_deployment)."""
    visible = Q(org=org) | Q(org__isnull=True)
    found: dict[str, tuple[int, PlaygroundName]] = {}

    def offer(name: str, kind: str, platform: bool) -> None:
        rank = (2 if platform else 0) + (1 if kind == "model" else 0)
        if name not in found or rank < found[name][0]:
            found[name] = (rank, PlaygroundName(name, kind, platform))

    for alias, org_id in Route.objects.filter(visible, enabled=True).values_list("alias", "org_id"):
        offer(alias, "route", org_id is None)
    for name, org_id in Deployment.objects.filter(visible, enabled=True).values_list("name", "org_id"):
        offer(name, "model", org_id is None)
    return sorted((entry for _, entry in found.values()), key=lambda n: (n.kind != "route", n.name))
