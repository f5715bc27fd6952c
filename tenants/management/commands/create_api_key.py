from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tenants.models import Organization
from tenants.services import api_key_create


class Command(BaseCommand):
    help = "Issue an API key for an organization. The key is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--name", default="cli key")
        parser.add_argument("--allow", action="append", default=[], metavar="MODEL",
                            help="a model or route name this key may use (repeatable; default: all)")
        parser.add_argument("--expires-in-days", type=int, default=None)
        parser.add_argument("--max-tokens", type=int, default=None, help="cap on max_tokens per request")

    def handle(self, *args, org, name, allow, expires_in_days, max_tokens, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"no organization {org!r}")
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires-in-days must be positive")
        if max_tokens is not None and max_tokens <= 0:
            raise CommandError("--max-tokens must be positive")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        issued = api_key_create(
            org=organization, name=name, allowed_models=allow, expires_at=expires_at,
            max_tokens_per_request=max_tokens, actor="manage.py",
        )
        self.stdout.write(issued.raw)
