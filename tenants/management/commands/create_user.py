from django.core.management.base import BaseCommand, CommandError

from tenants.models import Membership, Organization
from tenants.services import user_membership_set


class Command(BaseCommand):
    help = "Create a user (or update one) and give them a role in an organization."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--role", choices=Membership.Role.values, default=Membership.Role.MEMBER)
        parser.add_argument("--email", default="")
        parser.add_argument("--password", default=None, help="set the login password (omit to leave it unchanged)")

    def handle(self, *args, username, org, role, email, password, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"no organization {org!r}")
        membership = user_membership_set(
            org=organization, username=username, role=role, email=email, password=password, actor="manage.py"
        )
        self.stdout.write(f"{username} is {membership.role} of {organization.slug}")
