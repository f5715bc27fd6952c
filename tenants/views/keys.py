"""The API keys pages: list, create, detail (rotation chain, recent events), revoke, rotate.

A new secret is rendered once, in the response to the POST that made it: it is neither
stored (not even in the session) nor shown by any page reached later. Playground keys
(ApiKey.Kind.PLAYGROUND) are not listed and cannot be reached here.
"""
from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from tenants.access import MANAGERS, OVERSEERS, org_view
from tenants.forms import ApiKeyCreateForm, ApiKeyRotateForm
from tenants.models import ApiKey, AuditEvent
from tenants.services import ChangeRefused, api_key_create, api_key_revoke, api_key_rotate

PAGE_SIZE = 100


def key_status(api_key: ApiKey, now=None) -> str:
    """active, expiring (rotated, in its overlap), expired or revoked."""
    now = now or timezone.now()
    if api_key.revoked_at is not None:
        return "revoked"
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return "expired"
    if getattr(api_key, "replaced", False):
        return "expiring"
    return "active"


def _application_keys(org):
    return ApiKey.objects.filter(org=org, kind=ApiKey.Kind.APPLICATION)


def _get_key(request, key) -> ApiKey:
    """The org's application key with this public id; 404 otherwise (playground keys too)."""
    return get_object_or_404(_application_keys(request.org).select_related("created_by"), public_id=key)


@org_view(get=OVERSEERS)
def key_list(request):
    rows = (_application_keys(request.org).select_related("created_by")
            .order_by("-created_at", "-pk"))
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    keys = list(page.object_list)
    # One query for "which of these were rotated", not one per row.
    replaced = set(ApiKey.objects.filter(rotated_from__in=keys).values_list("rotated_from_id", flat=True))
    now = timezone.now()
    for api_key in keys:
        api_key.replaced = api_key.pk in replaced
        api_key.status = key_status(api_key, now)
    return render(request, "tenants/keys.html", {"section": "keys", "keys": keys, "page": page})


@org_view(get=MANAGERS, post=MANAGERS)
def key_new(request):
    form = ApiKeyCreateForm(request.POST if request.method == "POST" else None, org=request.org)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        issued = api_key_create(
            org=request.org, name=data["name"], allowed_models=data["allowed"], expires_at=data["expires_at"],
            max_tokens_per_request=data["max_tokens_per_request"], rpm_limit=data["rpm_limit"],
            tpm_limit=data["tpm_limit"], created_by=request.user,
        )
        messages.success(request, f"Key “{issued.api_key.name}” created.")
        return _secret_once(request, issued, "tenants/key_new.html")
    return render(request, "tenants/key_new.html", {"section": "keys", "form": form},
                  status=400 if request.method == "POST" else 200)


def _secret_once(request, issued, template):
    response = render(request, template, {"section": "keys", "issued": issued, "api_key": issued.api_key})
    # The page holds a secret: never from a cache, never the back button's copy.
    response["Cache-Control"] = "no-store"
    return response


@org_view(get=OVERSEERS)
def key_detail(request, key):
    api_key = _get_key(request, key)
    chain = _rotation_chain(api_key)
    now = timezone.now()
    for link in chain:
        link.replaced = link is not chain[-1]
        link.status = key_status(link, now)
    events = (AuditEvent.objects.filter(org=request.org, target_type="api_key",
                                        target_id__in=[str(link.public_id) for link in chain])
              .order_by("-created_at", "-seq")[:20])
    api_key.replaced = api_key is not chain[-1]
    api_key.status = key_status(api_key, now)
    return render(request, "tenants/key_detail.html", {
        "section": "keys", "api_key": api_key, "chain": chain, "events": events,
        "can_rotate": api_key.status == "active",
    })


def _rotation_chain(api_key: ApiKey, limit: int = 20) -> list[ApiKey]:
    """The keys this one replaced and was replaced by, oldest first (bounded)."""
    older = []
    current = api_key
    while current.rotated_from_id and len(older) < limit:
        current = ApiKey.objects.get(pk=current.rotated_from_id)
        older.append(current)
    newer = []
    current = api_key
    while len(newer) < limit:
        current = ApiKey.objects.filter(rotated_from=current).first()
        if current is None:
            break
        newer.append(current)
    return [*reversed(older), api_key, *newer]


@org_view(post=MANAGERS)
def key_revoke(request, key):
    api_key = _get_key(request, key)
    if api_key.revoked_at is None:
        api_key_revoke(api_key=api_key, actor_user=request.user)
        messages.success(request, f"Key {api_key.display} revoked; clients using it are disconnected.")
    else:
        messages.info(request, f"Key {api_key.display} was already revoked.")
    return redirect("key_detail", org=request.org.slug, key=api_key.public_id)


@org_view(get=MANAGERS, post=MANAGERS)
def key_rotate(request, key):
    api_key = _get_key(request, key)
    form = ApiKeyRotateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            issued = api_key_rotate(api_key=api_key, overlap=form.overlap_delta(), actor_user=request.user)
        except ChangeRefused as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.success(request, f"Key rotated: {api_key.display} keeps working until "
                                      f"{issued.api_key.rotated_from.expires_at:%Y-%m-%d %H:%M} UTC.")
            return _secret_once(request, issued, "tenants/key_rotate.html")
    return render(request, "tenants/key_rotate.html", {"section": "keys", "form": form, "api_key": api_key},
                  status=400 if request.method == "POST" else 200)
