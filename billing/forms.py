"""Forms of the billing pages."""
from __future__ import annotations

from django import forms
from django.db.models import Q

from billing.models import Budget
from catalog.models import Deployment, Route
from tenants.models import ApiKey, Organization

from billing.budget_admin import EDITABLE_FIELDS


class BudgetForm(forms.ModelForm):
    """A budget of one org. Choices of keys, routes and deployments are limited to what
    the org may name (its application keys; its own and the platform's routes and
    deployments), so another org's object is refused as an invalid choice; everything
    else is `Budget.clean` and the model's constraints (run by the model form)."""

    class Meta:
        model = Budget
        fields = EDITABLE_FIELDS
        widgets = {"limit_usd": forms.NumberInput(attrs={"step": "any", "min": "0"})}
        labels = {"limit_usd": "Limit (USD)", "limit_tokens": "Limit (tokens)", "api_key": "API key",
                  "soft_threshold_percent": "Soft threshold (%)", "throttle_rpm": "Throttle (requests/min)",
                  "hard_action": "At the limit"}

    def __init__(self, *args, org: Organization, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.org = org
        visible = Q(org=org) | Q(org__isnull=True)
        keys = ApiKey.objects.filter(org=org, kind=ApiKey.Kind.APPLICATION)
        current_key = self.instance.api_key_id
        keys = keys.filter(Q(revoked_at__isnull=True) | Q(pk=current_key)) if current_key else keys.filter(
            revoked_at__isnull=True)
        self.fields["api_key"].queryset = keys.order_by("name")
        self.fields["api_key"].label_from_instance = lambda key: f"{key.name} ({key.display})"
        routes = Route.objects.filter(visible).order_by("alias")
        self.fields["route"].queryset = routes
        self.fields["fallback_route"].queryset = routes
        for name in ("route", "fallback_route"):
            self.fields[name].label_from_instance = lambda route: route.alias + ("" if route.org_id else " (platform)")
        self.fields["deployment"].queryset = Deployment.objects.filter(visible).order_by("name")
        self.fields["deployment"].label_from_instance = (
            lambda deployment: deployment.name + ("" if deployment.org_id else " (platform)"))
