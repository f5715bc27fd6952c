from django.contrib import admin

from billing.models import UsageDailyRollup, UsageRecord
from tenants.admin_audit import ReadOnlyAdmin


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "org", "requested_model", "deployment_name", "status", "prompt_tokens",
                    "completion_tokens", "cost_usd"]
    list_filter = ["status", "provider"]
    search_fields = ["request_id", "client_request_id", "end_user"]
    date_hierarchy = "started_at"


@admin.register(UsageDailyRollup)
class UsageDailyRollupAdmin(ReadOnlyAdmin):
    list_display = ["day", "org", "api_key", "deployment_name", "requests", "prompt_tokens", "completion_tokens",
                    "cost_usd"]
    list_filter = ["day"]
