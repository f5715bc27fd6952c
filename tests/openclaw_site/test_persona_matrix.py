"""Every dashboard URL, every method, every persona: generated from the URL configuration.

Each view under /orgs/<slug>/ declares with `tenants.access.org_view` which roles may use
it for GET and for POST. This test walks the URL configuration, so a new page is covered
the moment it is routed, and a page without a declaration fails here. For each page it
checks, for real, through the whole middleware stack:
  anonymous -> redirect to the login page; outsider (a member of another org) -> 404;
  a role not declared for the method -> 403 (or 405 when no role may use the method);
  a declared role -> neither refused nor a server error.
URL arguments other than the org come from SAMPLES: a new argument name needs a sample.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.support.personas import PERSONAS, make_personas

pytestmark = pytest.mark.django_db

ORG_PREFIX = "orgs/<slug:org>/"


def _org_pages():
    """(url name, route, view) for every pattern under the org prefix."""
    found = []

    def walk(patterns, prefix):
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern) and route.startswith(ORG_PREFIX):
                found.append((entry.name, route, entry.callback))

    walk(get_resolver().url_patterns, "")
    return found


ORG_PAGES = _org_pages()


def _sample_objects(personas):
    """One object of each kind a dashboard URL can name, in the personas' org."""
    from billing.models import BillingReport, Budget, UsageRecord
    from tenants.audit import record_event
    from tenants.models import Membership
    from tenants.services import api_key_create

    org = personas.org
    issued = api_key_create(org=org, name="sample key")
    budget = Budget.objects.create(org=org, name="sample budget", window="month", limit_usd=Decimal("10"))
    record = UsageRecord.objects.create(org=org, api_key=issued.api_key, requested_model="mock-fast",
                                        status="success", cost_usd=Decimal("0.001"))
    event = record_event(org=org, actor_type="system", action="sample.event")
    member = Membership.objects.get(org=org, user=personas.users["member"])
    report = BillingReport.objects.create(org=org, month=date(2031, 11, 1))  # a draft
    return {
        "key": str(issued.api_key.public_id),
        "member": str(member.public_id),
        "budget": str(getattr(budget, "public_id", budget.pk)),
        "request_id": str(record.request_id),
        "event": str(event.public_id),
        "report": str(report.public_id),
    }


def _cases():
    for name, route, view in ORG_PAGES:
        for method in ("GET", "POST"):
            for persona in PERSONAS:
                yield pytest.param(name, method, persona, id=f"{name}-{method}-{persona}")


def test_every_org_page_declares_who_may_use_it():
    undeclared = [route for _, route, view in ORG_PAGES if not hasattr(view, "org_access")]
    assert not undeclared, f"views without tenants.access.org_view: {undeclared}"
    unnamed = [route for name, route, _ in ORG_PAGES if not name]
    assert not unnamed, f"org pages need a URL name: {unnamed}"


def test_the_matrix_covers_the_dashboard():
    # A guard against the walk silently finding nothing (e.g. a moved prefix).
    names = {name for name, _, _ in ORG_PAGES}
    assert {"overview", "keys", "members", "budgets", "requests", "audit_log", "playground"} <= names


@pytest.mark.parametrize("name,method,persona", list(_cases()))
def test_persona_matrix(client, name, method, persona):
    from django.urls import reverse

    personas = make_personas()
    samples = _sample_objects(personas)
    route, view = next((route, view) for n, route, view in ORG_PAGES if n == name)
    kwargs = {"org": personas.org.slug}
    for argument in _arguments(route):
        assert argument in samples, f"{route}: add a sample for URL argument {argument!r} to SAMPLES"
        kwargs[argument] = samples[argument]
    url = reverse(name, kwargs=kwargs)
    personas.client_for(client, persona)
    response = client.get(url) if method == "GET" else client.post(url, {})
    allowed = view.org_access.get(method, frozenset())
    status = response.status_code
    if persona == "anonymous":
        assert status == 302 and "/accounts/login/" in response["Location"], (url, status)
    elif persona == "outsider":
        assert status == 404, (url, status)
    elif not allowed:
        assert status == 405, (url, method, status)
    elif persona not in allowed:
        assert status == 403, (url, method, persona, status)
    else:
        assert status not in (403, 404, 405) and status < 500, (url, method, persona, status)


def _arguments(route: str) -> list[str]:
    import re

    return [match.group(1) for match in re.finditer(r"<(?:\w+:)?(\w+)>", route) if match.group(1) != "org"]
