from django import forms
from django.contrib import admin, messages
from django.db import transaction

from tenants.admin_audit import AuditedAdmin, ReadOnlyAdmin
from tenants.forms import time_zone_choices
from tenants.models import ApiKey, AuditEvent, Membership, Organization
from tenants.services import api_key_create, api_key_revoke, close_org_sockets_on_commit


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


class OrganizationAdminForm(forms.ModelForm):
    time_zone = forms.ChoiceField(choices=time_zone_choices, initial="UTC",
                                  help_text=Organization._meta.get_field("time_zone").help_text)

    class Meta:
        model = Organization
        fields = "__all__"


@admin.register(Organization)
class OrganizationAdmin(AuditedAdmin):
    form = OrganizationAdminForm
    audit_target_type = "organization"
    list_display = ["slug", "name", "tier", "status", "created_at"]
    list_filter = ["tier", "status"]
    search_fields = ["slug", "name"]
    readonly_fields = ["public_id", "created_at", "webhook_secret"]  # the secret receivers verify signatures with
    inlines = [MembershipInline]

    def audit_org(self, obj):
        return obj

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "status" in form.changed_data:
            close_org_sockets_on_commit(obj)

    def has_delete_permission(self, request, obj=None):
        return False  # suspend instead: the audit log and usage keep referring to it


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    audit_target_type = "api_key"
    list_display = ["display", "name", "org", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["org"]
    search_fields = ["name", "lookup"]
    readonly_fields = ["public_id", "lookup", "last_four", "created_at", "revoked_at", "last_used_at"]
    fields = ["org", "name", "allowed_models", "max_tokens_per_request", "expires_at", *readonly_fields]
    actions = ["revoke_keys"]

    def get_readonly_fields(self, request, obj=None):
        # The org of an existing key never changes: its secret was issued for it.
        return [*self.readonly_fields, "org"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        issued = api_key_create(
            org=obj.org, name=obj.name, allowed_models=obj.allowed_models, expires_at=obj.expires_at,
            max_tokens_per_request=obj.max_tokens_per_request, actor_type=AuditEvent.ActorType.USER,
            actor=request.user.get_username(),
        )
        obj.pk = issued.api_key.pk
        obj.public_id = issued.api_key.public_id
        messages.warning(request, f"New API key (shown only once, copy it now): {issued.raw}")

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request, queryset):
        with transaction.atomic():
            for api_key in queryset:
                api_key_revoke(api_key=api_key, actor_type=AuditEvent.ActorType.USER, actor=request.user.get_username())
        messages.success(request, f"Revoked {queryset.count()} key(s).")

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: usage records keep pointing at the key


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "org", "action", "actor_type", "actor", "target_type", "target_id"]
    list_filter = ["action", "actor_type"]
    search_fields = ["action", "actor", "target_id"]
