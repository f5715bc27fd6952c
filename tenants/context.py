"""Template context every dashboard page shares: the signed-in user's organizations.

Lazy, so pages that do not render the org switcher (and anonymous requests) cost no query.
"""
from __future__ import annotations

from django.utils.functional import SimpleLazyObject

from tenants.access import MANAGERS, OVERSEERS, member_orgs


def dashboard(request) -> dict:
    role = getattr(request, "role", None)
    return {
        "member_orgs": SimpleLazyObject(lambda: member_orgs(getattr(request, "user", None))),
        # What the navigation may offer: the same role sets the views check.
        "can_oversee": role in OVERSEERS,
        "can_manage": role in MANAGERS,
    }
