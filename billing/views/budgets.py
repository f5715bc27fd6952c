"""Budget pages: the list with each budget's standing, a new budget, one budget with
its edit form (templates/billing/budgets*.html)."""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render

from billing.budget_admin import budget_create, budget_update, budget_values
from billing.budget_status import budget_statuses
from billing.forms import BudgetForm
from billing.models import Budget
from tenants.access import MANAGERS, OVERSEERS, org_view
from tenants.models import AuditEvent


def _actor(request) -> dict:
    return {"actor_type": AuditEvent.ActorType.USER, "actor": request.user.get_username()}


@org_view(get=OVERSEERS)
def budgets(request):
    statuses = budget_statuses(request.org)
    return render(request, "billing/budgets.html", {
        "section": "budgets", "statuses": statuses, "can_manage": request.role in MANAGERS,
    })


@org_view(get=MANAGERS, post=MANAGERS)
def budget_new(request):
    form = BudgetForm(request.POST or None, org=request.org)
    if request.method == "POST" and form.is_valid():
        budget = budget_create(org=request.org, budget=form.save(commit=False), **_actor(request))
        messages.success(request, f"Budget “{budget.name}” created.")
        return redirect("budget", org=request.org.slug, budget=budget.public_id)
    return render(request, "billing/budget_form.html", {"section": "budgets", "form": form, "budget": None},
                  status=400 if form.errors else 200)


@org_view(get=OVERSEERS, post=MANAGERS)
def budget_detail(request, budget):
    obj = (Budget.objects.filter(org=request.org, public_id=budget)
           .select_related("api_key", "route", "deployment", "fallback_route").first())
    if obj is None:
        raise Http404("no such budget")
    before = budget_values(obj)
    form = BudgetForm(request.POST or None, instance=obj, org=request.org)
    if request.method == "POST" and form.is_valid():
        budget_update(budget=form.save(commit=False), before=before, **_actor(request))
        messages.success(request, "Budget saved. The gateway applies it within about a second.")
        return redirect("budget", org=request.org.slug, budget=obj.public_id)
    if form.errors:
        # The standing is of the saved budget, not of the rejected edit.
        obj = Budget.objects.select_related("api_key", "route", "deployment", "fallback_route").get(pk=obj.pk)
    [status] = budget_statuses(request.org, budgets=[obj])
    return render(request, "billing/budget_detail.html", {
        "section": "budgets", "status": status, "budget": obj, "form": form,
        "can_manage": request.role in MANAGERS,
    }, status=400 if form.errors else 200)
