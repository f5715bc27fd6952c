"""The tenants' management commands (tenants/management/commands/: create_org, create_user,
create_api_key, revoke_api_key): they create what they say, with a working key, revoke
it by its displayed prefix, and explain bad input."""
import pytest
from django.core.management import CommandError, call_command

from tenants.access import AuthenticationFailed, authenticate_api_key
from tenants.models import Membership, Organization

pytestmark = pytest.mark.django_db


def test_commands_create_an_org_a_member_and_a_working_key(capsys):
    call_command("create_org", "initech", "--name", "Initech", "--tier", "pro")
    call_command("create_user", "milton", "--org", "initech", "--role", "auditor", "--password", "stapler-1234")
    capsys.readouterr()
    call_command("create_api_key", "--org", "initech", "--name", "ci", "--allow", "gpt-4-turbo")
    raw = capsys.readouterr().out.strip()
    principal = authenticate_api_key(raw)
    assert principal.org_slug == "initech" and principal.allowed_models == ("gpt-4-turbo",)
    assert Membership.objects.get(user__username="milton").role == "auditor"
    assert Organization.objects.get(slug="initech").tier == "pro"


@pytest.mark.parametrize("args,message", [
    (["create_org", "Bad Slug"], "slug must be"),
    (["create_user", "x", "--org", "nope"], "no organization"),
    (["create_api_key", "--org", "nope"], "no organization"),
])
def test_commands_explain_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        call_command(*args)


def test_create_org_refuses_a_duplicate(org):
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_org", org.slug)


def test_revoke_api_key_revokes_the_key_its_prefix_names(issued_key, capsys):
    prefix = issued_key.api_key.prefix
    assert authenticate_api_key(issued_key.raw)
    call_command("revoke_api_key", prefix)
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(AuthenticationFailed):
        authenticate_api_key(issued_key.raw)
    with pytest.raises(CommandError, match="no API key"):
        call_command("revoke_api_key", "ocw_nosuchkey0")
