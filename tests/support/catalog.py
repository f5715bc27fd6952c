"""Catalogue objects for tests: routes over deployments (the `make_route` fixture,
imported by the test modules that use it) and in-memory targets for the strategies."""
from decimal import Decimal

import pytest

from catalog.models import Route, RouteCandidate
from catalog.money import Prices
from catalog.targets import Target


@pytest.fixture
def make_route(db):
    """make_route(alias, strategy, [deployment or (deployment, weight), ...], org=None, **fields)."""
    def make(alias, strategy, deployments, *, org=None, **fields):
        route = Route.objects.create(alias=alias, strategy=strategy, org=org, **fields)
        for position, item in enumerate(deployments):
            deployment, weight = item if isinstance(item, tuple) else (item, 1)
            RouteCandidate.objects.create(route=route, deployment=deployment, weight=weight, position=position)
        return route

    return make


def target(i, *, price="1", rpm=None, tpm=None, concurrency=None) -> Target:
    """Deployment `d{i}` as the strategies see it, with the same price in and out."""
    return Target(deployment_id=i, name=f"d{i}", provider="mock", litellm_model="openai/x", api_base="",
                  api_key=None, extra_params={}, prices=Prices(Decimal(price), Decimal(price)), context_window=8000,
                  max_output_tokens=1000, tags=(), region="", rpm_limit=rpm, tpm_limit=tpm,
                  max_concurrency=concurrency, connect_timeout_s=1, first_token_timeout_s=1,
                  idle_timeout_s=1, total_timeout_s=1)
