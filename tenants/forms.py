"""Forms of the dashboard's keys and members pages: they validate, services write."""
from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from tenants.hooks import resolvable_names
from tenants.models import Membership, available_time_zones

Role = Membership.Role


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="What uses this key, e.g. “support bot (production)”.")
    allowed = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Allowed models and routes",
        help_text="None ticked: every model and route the organization can use.")
    rpm_limit = forms.IntegerField(required=False, min_value=1, label="Requests per minute",
                                   help_text="Empty: no per-key limit.")
    tpm_limit = forms.IntegerField(required=False, min_value=1, label="Tokens per minute",
                                   help_text="Empty: no per-key limit.")
    max_tokens_per_request = forms.IntegerField(required=False, min_value=1, label="Max tokens per request",
                                                help_text="Requests asking for more are clamped.")
    expires_at = forms.DateTimeField(
        required=False, label="Expires (UTC)", help_text="Empty: never expires.",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"))

    def __init__(self, *args, org, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed"].choices = [(name, name) for name in resolvable_names(org)]

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Choose a time in the future.")
        return expires_at


OVERLAPS = {
    "0": timedelta(0),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}


class ApiKeyRotateForm(forms.Form):
    overlap = forms.ChoiceField(
        choices=[("0", "None: the old key stops now"), ("1h", "1 hour"), ("24h", "24 hours"), ("7d", "7 days")],
        initial="24h", widget=forms.RadioSelect, label="The old key keeps working for",
        help_text="Time to move clients to the new key. It never extends the old key's own expiry.")

    def overlap_delta(self) -> timedelta:
        return OVERLAPS[self.cleaned_data["overlap"]]


def _roles_for(actor_role: str):
    """Roles the actor may hand out: only owners grant the owner role."""
    if actor_role == Role.OWNER:
        return Role.choices
    return [(value, label) for value, label in Role.choices if value != Role.OWNER]


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args, actor_role: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _roles_for(actor_role)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args, actor_role: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _roles_for(actor_role)


def time_zone_choices() -> list[tuple[str, str]]:
    zones = sorted(available_time_zones() - {"UTC"})
    return [("UTC", "UTC")] + [(zone, zone.replace("_", " ")) for zone in zones]


class OrgTimeZoneForm(forms.Form):
    """The org's time zone (usage analytics are shown in it; billing months stay UTC)."""
    time_zone = forms.ChoiceField(label="Time zone", choices=time_zone_choices,
                                  help_text="Days and periods on the usage page are this zone's.")
