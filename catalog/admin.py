from django import forms
from django.contrib import admin

from catalog.models import Deployment, ProviderCredential, Route, RouteCandidate, RoutingPolicy
from tenants.admin_audit import AuditedAdmin


class ProviderCredentialForm(forms.ModelForm):
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False), required=False, strip=True,
        help_text="The provider's API key. Stored encrypted; leave empty to keep the current one.",
    )

    class Meta:
        model = ProviderCredential
        fields = ["org", "name", "provider"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("secret"):
            self.add_error("secret", "A new credential needs its secret.")
        return cleaned

    def save(self, commit=True):
        if self.cleaned_data.get("secret"):
            self.instance.set_secret(self.cleaned_data["secret"])
        return super().save(commit)


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(AuditedAdmin):
    audit_target_type = "credential"
    audit_redacted_fields = ("secret",)
    form = ProviderCredentialForm
    list_display = ["name", "provider", "org", "last_four", "created_at"]
    list_filter = ["provider"]


@admin.register(Deployment)
class DeploymentAdmin(AuditedAdmin):
    audit_target_type = "deployment"
    list_display = ["name", "org", "provider", "litellm_model", "input_price_per_mtok", "output_price_per_mtok",
                    "enabled", "lean_stream"]
    list_filter = ["provider", "enabled", "lean_stream"]
    search_fields = ["name", "litellm_model"]
    readonly_fields = ["public_id", "created_at"]


class RouteCandidateInline(admin.TabularInline):
    model = RouteCandidate
    extra = 1
    autocomplete_fields = ["deployment"]


@admin.register(Route)
class RouteAdmin(AuditedAdmin):
    audit_target_type = "route"
    list_display = ["alias", "org", "strategy", "max_attempts", "enabled"]
    list_filter = ["strategy", "enabled"]
    search_fields = ["alias"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [RouteCandidateInline]

    def save_formset(self, request, form, formset, change):
        # Candidate changes are part of the route's change: audit them with it.
        super().save_formset(request, form, formset, change)
        if formset.has_changed():
            self._audit(request, form.instance, "candidates.update",
                        [f"{c.deployment.name}" for c in form.instance.candidates.all()])


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(AuditedAdmin):
    audit_target_type = "routing_policy"
    list_display = ["__str__", "updated_at"]
    readonly_fields = ["public_id", "updated_at"]

    def save_model(self, request, obj, form, change):
        from django.utils import timezone

        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
