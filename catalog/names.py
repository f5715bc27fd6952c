"""The names an org can put in llm_request.model: enabled deployments and routes, its
own and the platform's (docs/architecture.md, "Name resolution")."""
from __future__ import annotations

from django.db.models import Q

from catalog.models import Deployment, Route
from tenants.models import Organization


def resolvable_names(org: Organization) -> list[str]:
    visible = Q(org__isnull=True) | Q(org=org)
    names = set(Deployment.objects.filter(visible, enabled=True).values_list("name", flat=True))
    names.update(Route.objects.filter(visible, enabled=True).values_list("alias", flat=True))
    return sorted(names)
