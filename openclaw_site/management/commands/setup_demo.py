from django.core.management.base import BaseCommand

from openclaw_site.demo import demo_setup


class Command(BaseCommand):
    help = "Create (or reuse) the demo org, admin login and mock deployments; print a fresh demo API key."

    def add_arguments(self, parser):
        parser.add_argument("--mock-api-base", default="http://127.0.0.1:8100/v1")

    def handle(self, *args, mock_api_base, **options):
        demo = demo_setup(mock_api_base=mock_api_base)
        self.stdout.write(demo.api_key)
