from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from tenants.models import Organization
from tenants.services import org_create


class Command(BaseCommand):
    help = "Create an organization (prints its slug and public id)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--tier", choices=Organization.Tier.values, default=Organization.Tier.FREE)

    def handle(self, *args, slug, name, tier, **options):
        if slugify(slug) != slug:
            raise CommandError(f"slug must be lowercase letters, digits and dashes, e.g. {slugify(slug) or 'acme'!r}")
        if Organization.objects.filter(slug=slug).exists():
            raise CommandError(f"organization {slug!r} already exists")
        org = org_create(slug=slug, name=name or slug, tier=tier, actor="manage.py")
        self.stdout.write(f"{org.slug} {org.public_id}")
