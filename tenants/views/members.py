"""The members pages: list, invite, detail (change role), remove.

Who may change whom is the services' rule (tenants/services.py, "Members"): owners
manage everyone, admins everyone but owners, and the last owner stays.
"""
from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Value, When
from django.shortcuts import get_object_or_404, redirect, render

from tenants.access import MANAGERS, OVERSEERS, org_view
from tenants.forms import InviteForm, RoleForm
from tenants.models import Membership
from tenants.services import ChangeRefused, membership_invite, membership_remove, membership_role_set

Role = Membership.Role
PAGE_SIZE = 100
ROLE_ORDER = Case(*(When(role=value, then=Value(rank)) for rank, value in enumerate(Role.values)),
                  output_field=IntegerField())


def _get_member(request, member) -> Membership:
    return get_object_or_404(Membership.objects.select_related("user", "org"), org=request.org, public_id=member)


def _may_change(request, membership: Membership) -> bool:
    """Whether the viewer may change this member (the page offers the forms only then)."""
    return request.role in MANAGERS and (request.role == Role.OWNER or membership.role != Role.OWNER)


@org_view(get=OVERSEERS)
def member_list(request):
    rows = (Membership.objects.filter(org=request.org).select_related("user")
            .order_by(ROLE_ORDER, "user__username"))
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "tenants/members.html", {"section": "members", "members": page.object_list, "page": page})


@org_view(get=MANAGERS, post=MANAGERS)
def member_invite(request):
    form = InviteForm(request.POST if request.method == "POST" else None, actor_role=request.role)
    if request.method == "POST" and form.is_valid():
        try:
            membership = membership_invite(
                org=request.org, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
                invited_by=request.user, base_url=request.build_absolute_uri("/"),
            )
        except ChangeRefused as refusal:
            form.add_error("email" if "already a member" in str(refusal) else None, str(refusal))
        else:
            messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
            return redirect("member_detail", org=request.org.slug, member=membership.public_id)
    return render(request, "tenants/member_invite.html", {"section": "members", "form": form},
                  status=400 if request.method == "POST" else 200)


@org_view(get=OVERSEERS, post=MANAGERS)
def member_detail(request, member):
    membership = _get_member(request, member)
    may_change = _may_change(request, membership)
    form = RoleForm(request.POST if request.method == "POST" else None, actor_role=request.role, initial={"role": membership.role})
    if request.method == "POST" and form.is_valid():
        try:
            membership_role_set(membership=membership, role=form.cleaned_data["role"], actor_user=request.user)
        except ChangeRefused as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.success(request, f"{membership.user.get_username()} is now {form.cleaned_data['role']}.")
            return redirect("member_detail", org=request.org.slug, member=membership.public_id)
    status = 400 if request.method == "POST" else 200
    return render(request, "tenants/member_detail.html", {
        "section": "members", "membership": membership, "form": form, "may_change": may_change,
        "is_self": membership.user_id == request.user.pk,
    }, status=status)


@org_view(post=MANAGERS)
def member_remove(request, member):
    membership = _get_member(request, member)
    try:
        membership_remove(membership=membership, actor_user=request.user)
    except ChangeRefused as refusal:
        messages.error(request, str(refusal))
        return redirect("member_detail", org=request.org.slug, member=membership.public_id)
    messages.success(request, f"{membership.user.get_username()} was removed from {request.org.name}.")
    if membership.user_id == request.user.pk:
        return redirect("home")
    return redirect("members", org=request.org.slug)
