"""The demo tenant (openclaw_site/demo.py): one org with an admin login, the mock
deployments and route, and a fresh key each time — set up any number of times without
duplicates, following the mock LLM to a new address, keeping an admin's edits."""
import pytest

from catalog.models import Deployment, ProviderCredential, Route
from openclaw_site.demo import ADMIN_USERNAME, DEMO_MODELS, DEMO_ORG, DEMO_ROUTE, demo_setup
from tenants.access import authenticate_api_key
from tenants.models import Organization

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path  # the admin password file is written here


def test_the_demo_tenant_is_set_up_with_a_working_key(settings):
    demo = demo_setup(mock_api_base="http://127.0.0.1:8100/v1")
    assert demo.org.slug == DEMO_ORG and demo.admin_username == ADMIN_USERNAME
    assert authenticate_api_key(demo.api_key).org_id == demo.org.pk
    assert demo.admin_password == (settings.DATA_DIR / "admin_password").read_text().strip()
    assert sorted(Deployment.objects.filter(org=None).values_list("name", flat=True)) == sorted(
        spec["name"] for spec in DEMO_MODELS)
    route = Route.objects.get(org=None, alias=DEMO_ROUTE["alias"])
    assert [c.deployment.name for c in route.candidates.order_by("position")] == list(DEMO_ROUTE["candidates"])


def test_setting_it_up_again_adds_nothing_but_a_new_key_and_follows_the_mock():
    first = demo_setup(mock_api_base="http://127.0.0.1:8100/v1")
    route = Route.objects.get(alias=DEMO_ROUTE["alias"])
    route.candidates.order_by("position").last().delete()  # an admin's edit
    second = demo_setup(mock_api_base="http://127.0.0.1:9100/v1")
    assert second.api_key != first.api_key and second.admin_password == first.admin_password
    assert authenticate_api_key(first.api_key) and authenticate_api_key(second.api_key)
    assert Organization.objects.filter(slug=DEMO_ORG).count() == 1
    assert ProviderCredential.objects.filter(org=None, name="mock").count() == 1
    assert Deployment.objects.filter(org=None).count() == len(DEMO_MODELS)
    assert set(Deployment.objects.values_list("api_base", flat=True)) == {"http://127.0.0.1:9100/v1"}
    assert Route.objects.get(alias=DEMO_ROUTE["alias"]).candidates.count() == len(DEMO_ROUTE["candidates"]) - 1
