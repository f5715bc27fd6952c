"""The playground page, its key endpoint, and a stream with a playground key."""
from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from catalog.models import Route
from tenants.keys import parse_key
from tenants.models import ApiKey
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


def _page(personas):
    return reverse("playground", kwargs={"org": personas.org.slug})


def _key_url(personas):
    return reverse("playground_key", kwargs={"org": personas.org.slug})


def test_the_page_lists_the_names_the_org_can_use_and_holds_no_key(client, personas, make_deployment):
    make_deployment("platform-model")
    make_deployment("mine", org=personas.org)
    make_deployment("theirs", org=personas.other_org)
    make_deployment("off", enabled=False)
    Route.objects.create(org=personas.org, alias="my-route")
    Route.objects.create(org=None, alias="platform-model")  # a platform route hides the platform model of that name
    response = personas.client_for(client, "member").get(_page(personas))
    assert response.status_code == 200
    names = [(n.name, n.kind) for n in response.context["names"]]
    assert names == [("my-route", "route"), ("platform-model", "route"), ("mine", "model")]
    html = response.content.decode()
    for element in ("playground-model", "playground-prompt", "playground-api-key", "playground-send",
                    "playground-cancel", "playground-output", "playground-route", "playground-usage",
                    "playground-cost", "playground-status"):
        assert f'id="{element}"' in html
    assert "ocw_" not in html.replace('placeholder="ocw_…"', "")
    assert "needs JavaScript" in html and "<noscript>" in html
    assert "<script>" not in html and "openclaw/playground.js" in html
    assert not ApiKey.objects.filter(kind=ApiKey.Kind.PLAYGROUND).exists()


def test_the_key_endpoint_answers_a_member_with_a_key_and_reuses_it(personas):
    client = Client(enforce_csrf_checks=True)
    personas.client_for(client, "member")
    client.get(_page(personas))
    token = client.cookies["csrftoken"].value
    first = client.post(_key_url(personas), HTTP_X_CSRFTOKEN=token)
    assert first.status_code == 200 and first["Content-Type"] == "application/json"
    assert "no-cache" in first["Cache-Control"] or "max-age=0" in first["Cache-Control"]
    body = json.loads(first.content)
    assert parse_key(body["key"]) is not None
    assert body["websocket_url"] == "ws://testserver/websocket" and body["expires_at"].endswith("Z")
    again = json.loads(client.post(_key_url(personas), HTTP_X_CSRFTOKEN=token).content)
    assert again["key"] == body["key"]
    key = ApiKey.objects.get(lookup=parse_key(body["key"]).lookup)
    assert key.kind == ApiKey.Kind.PLAYGROUND and key.created_by == personas.users["member"]


def test_the_key_endpoint_needs_post_and_the_csrf_token(personas):
    client = Client(enforce_csrf_checks=True)
    personas.client_for(client, "member")
    assert client.get(_key_url(personas)).status_code == 405
    assert client.post(_key_url(personas)).status_code == 403
    assert not ApiKey.objects.filter(kind=ApiKey.Kind.PLAYGROUND).exists()


@pytest.mark.parametrize("persona,status", [("outsider", 404), ("anonymous", 302)])
def test_the_key_endpoint_is_for_members_only(client, personas, persona, status):
    response = personas.client_for(client, persona).post(_key_url(personas))
    assert response.status_code == status
    assert not ApiKey.objects.filter(kind=ApiKey.Kind.PLAYGROUND).exists()


def test_a_playground_key_is_not_listed_on_the_keys_page(client, personas):
    from tenants.services import api_key_create

    api_key_create(org=personas.org, name="application key")
    c = personas.client_for(client, "owner")
    c.get(_page(personas))
    body = json.loads(c.post(_key_url(personas)).content)
    playground = ApiKey.objects.get(lookup=parse_key(body["key"]).lookup)
    html = c.get(reverse("keys", kwargs={"org": personas.org.slug})).content.decode()
    assert "application key" in html
    assert playground.prefix not in html and playground.name not in html
