"""The dashboard's personas: one org with a user in each role, an outsider, anonymous.

Users have no usable password (`client.force_login` signs them in): hashing a password
per test would dominate the persona matrix's run time.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model

from tenants.models import Membership, Organization

ROLES = ("owner", "admin", "auditor", "member")
PERSONAS = (*ROLES, "outsider", "anonymous")


@dataclass
class Personas:
    org: Organization
    other_org: Organization
    users: dict  # persona -> user (no "anonymous")

    def client_for(self, client, persona: str):
        """`client` signed in as `persona` (left anonymous for "anonymous")."""
        if persona != "anonymous":
            client.force_login(self.users[persona])
        return client


def make_user(username: str, *, email: str = ""):
    user = get_user_model()(username=username, email=email or f"{username}@example.com")
    user.set_unusable_password()
    user.save()
    return user


def make_personas(org: Organization | None = None) -> Personas:
    org = org or Organization.objects.create(slug="acme", name="Acme Inc.")
    other = Organization.objects.create(slug="globex", name="Globex")
    users = {}
    for role in ROLES:
        users[role] = make_user(f"{role}-{org.slug}")
        Membership.objects.create(org=org, user=users[role], role=role)
    users["outsider"] = make_user(f"outsider-{org.slug}")
    Membership.objects.create(org=other, user=users["outsider"], role="owner")
    return Personas(org=org, other_org=other, users=users)
