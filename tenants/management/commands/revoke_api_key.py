from django.core.management.base import BaseCommand, CommandError

from tenants.keys import KEY_PREFIX
from tenants.models import ApiKey
from tenants.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key, named by its displayed prefix (ocw_xxxxxxxxxx)."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix, **options):
        lookup = prefix.removeprefix(KEY_PREFIX).split("_")[0]
        api_key = ApiKey.objects.filter(lookup=lookup).first()
        if api_key is None:
            raise CommandError(f"no API key {prefix!r}")
        api_key_revoke(api_key=api_key, actor="manage.py")
        self.stdout.write(f"revoked {api_key.display}")
