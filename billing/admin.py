from django.contrib import admin

from billing.models import (
    BillingReport, BillingReportLine, Budget, RateCard, RollupProgress, UsageDailyRollup, UsageDayFacet,
    UsageHourTotal, UsageRecord, UsageRollup,
)
from catalog.money import format_usd
from tenants.admin_audit import AuditedAdmin, ReadOnlyAdmin


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "org", "requested_model", "deployment_name", "status", "prompt_tokens",
                    "completion_tokens", "cost_usd"]
    list_filter = ["status", "provider"]
    search_fields = ["request_id", "client_request_id", "end_user"]
    date_hierarchy = "started_at"


class CostColumn:
    """The exact cost of a row of a usage table (integer pico-dollars) as dollars."""

    @admin.display(description="cost (USD)", ordering="cost_picos")
    def cost(self, obj):
        return format_usd(obj.cost_usd)


@admin.register(UsageRollup)
class UsageRollupAdmin(CostColumn, ReadOnlyAdmin):
    list_display = ["hour", "org", "api_key", "deployment_name", "requested_model", "end_user", "via_route", "status",
                    "requests", "prompt_tokens", "completion_tokens", "cost"]
    list_filter = ["status"]
    list_select_related = ["org", "api_key", "via_route"]
    search_fields = ["org__slug", "requested_model", "deployment_name", "end_user"]
    date_hierarchy = "hour"


@admin.register(UsageDailyRollup)
class UsageDailyRollupAdmin(CostColumn, ReadOnlyAdmin):
    list_display = ["day", "org", "api_key", "deployment_name", "requests", "prompt_tokens", "completion_tokens",
                    "cost"]
    list_filter = ["day"]
    list_select_related = ["org", "api_key"]


@admin.register(UsageHourTotal)
class UsageHourTotalAdmin(CostColumn, ReadOnlyAdmin):
    list_display = ["hour", "org", "requests", "errors", "cancelled", "prompt_tokens", "completion_tokens", "cost"]
    list_select_related = ["org"]
    search_fields = ["org__slug"]
    date_hierarchy = "hour"


@admin.register(UsageDayFacet)
class UsageDayFacetAdmin(CostColumn, ReadOnlyAdmin):
    list_display = ["day", "org", "facet", "value", "requests", "errors", "cancelled", "prompt_tokens",
                    "completion_tokens", "cost"]
    list_filter = ["facet"]
    list_select_related = ["org"]
    search_fields = ["org__slug", "value"]
    date_hierarchy = "day"


@admin.register(RollupProgress)
class RollupProgressAdmin(ReadOnlyAdmin):
    list_display = ["rolled_up_before"]


class BillingReportLineInline(admin.TabularInline):
    model = BillingReportLine
    fields = ["kind", "deployment_name", "api_key", "end_user", "usage_month", "input_price_per_mtok",
              "output_price_per_mtok", "requests", "prompt_tokens", "completion_tokens", "cost", "amount_usd"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["kind", "usage_month", "deployment_name", "end_user"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="cost (USD, exact)")
    def cost(self, obj):
        return format_usd(obj.cost_usd)


@admin.register(BillingReport)
class BillingReportAdmin(ReadOnlyAdmin):
    """Every org's monthly reports, read-only: built and finalised by beat (billing/reports.py)."""

    list_display = ["month", "org", "status", "requests", "prompt_tokens", "completion_tokens", "cost", "total_usd",
                    "built_at", "finalized_at"]
    list_filter = ["status", "month"]
    list_select_related = ["org"]
    search_fields = ["org__slug", "org__name", "public_id"]
    date_hierarchy = "month"
    inlines = [BillingReportLineInline]

    @admin.display(description="cost (USD, exact)", ordering="cost_picos")
    def cost(self, obj):
        return format_usd(obj.cost_usd)


@admin.register(BillingReportLine)
class BillingReportLineAdmin(ReadOnlyAdmin):
    list_display = ["report", "kind", "deployment_name", "api_key", "end_user", "usage_month", "requests",
                    "amount_usd"]
    list_filter = ["kind"]
    list_select_related = ["report__org", "api_key"]
    search_fields = ["report__org__slug", "deployment_name", "end_user"]


@admin.register(Budget)
class BudgetAdmin(AuditedAdmin):
    """Budgets are validated by Budget.clean (limits, key of the same org, fallback
    rules and cycles); the admin's model form runs it and shows its errors."""

    audit_target_type = "budget"
    list_display = ["name", "org", "scope", "api_key", "window", "limits", "filter_display", "action_display",
                    "enabled"]
    list_filter = ["scope", "window", "hard_action", "enabled"]
    list_select_related = ["org", "api_key", "route", "deployment", "fallback_route"]
    search_fields = ["name", "org__slug"]
    readonly_fields = ["created_at"]

    @admin.display(description="limits")
    def limits(self, obj):
        parts = []
        if obj.limit_usd is not None:
            parts.append(f"${format_usd(obj.limit_usd)}")
        if obj.limit_tokens is not None:
            parts.append(f"{obj.limit_tokens} tokens")
        return " / ".join(parts) or "-"

    @admin.display(description="filter")
    def filter_display(self, obj):
        if obj.route_id is not None:
            return f"route {obj.route.alias}"
        if obj.deployment_id is not None:
            return f"deployment {obj.deployment.name}"
        return "-"

    @admin.display(description="at the limit", ordering="hard_action")
    def action_display(self, obj):
        if obj.hard_action == Budget.HardAction.FALLBACK and obj.fallback_route_id is not None:
            return f"fall back to {obj.fallback_route.alias}"
        return obj.get_hard_action_display()


@admin.register(RateCard)
class RateCardAdmin(AuditedAdmin):
    audit_target_type = "rate_card"
    list_display = ["org", "deployment_display", "multiplier", "input_price_per_mtok", "output_price_per_mtok",
                    "created_at"]
    list_filter = ["org"]
    list_select_related = ["org", "deployment"]
    search_fields = ["org__slug", "deployment__name"]
    readonly_fields = ["created_at"]

    @admin.display(description="deployment", ordering="deployment__name")
    def deployment_display(self, obj):
        return obj.deployment.name if obj.deployment_id is not None else "(every deployment)"
