"""Django admin support: every change a platform operator makes is audited.

The admin already wraps each change view in a transaction, so the audit event
commits or rolls back with the change it describes.
"""
from __future__ import annotations

from django.contrib import admin
from django.db import transaction

from tenants.audit import record_event
from tenants.models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records nobody edits by hand: the audit log, usage, rollups."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    audit_target_type: str = ""
    # Field values never copied into the audit event.
    audit_redacted_fields: tuple[str, ...] = ()

    def audit_org(self, obj):
        """The org whose audit chain records changes to `obj` (None: platform)."""
        return getattr(obj, "org", None)

    def _audit(self, request, obj, action: str, changed: list[str] | None = None) -> None:
        data = {"fields": sorted(changed or [])}
        for name in self.audit_redacted_fields:
            if name in data["fields"]:
                data.setdefault("redacted", []).append(name)
        record_event(
            org=self.audit_org(obj),
            actor_type=AuditEvent.ActorType.USER,
            actor=request.user.get_username(),
            action=f"{self.audit_target_type}.{action}",
            target_type=self.audit_target_type,
            target_id=str(getattr(obj, "public_id", obj.pk)),
            data=data,
        )

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            self._audit(request, obj, "update" if change else "create", list(form.changed_data))

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._audit(request, obj, "delete")
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self._audit(request, obj, "delete")
            super().delete_queryset(request, queryset)
