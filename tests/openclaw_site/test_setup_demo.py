"""`manage.py setup_demo` (openclaw_site/management/commands/setup_demo.py): prepares the
demo tenant for the mock LLM it is given and prints only a fresh key (what `make run`
and the e2e stack read)."""
import io

import pytest
from django.core.management import call_command

from catalog.models import Deployment
from tenants.access import authenticate_api_key

pytestmark = [pytest.mark.django_db]


def test_it_prints_a_fresh_working_key_for_the_mock_it_is_given(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    keys = []
    for _ in range(2):
        out = io.StringIO()
        call_command("setup_demo", "--mock-api-base", "http://127.0.0.1:8177/v1", stdout=out)
        keys.append(out.getvalue().strip())
    assert len(set(keys)) == 2 and all("\n" not in key for key in keys)
    assert all(authenticate_api_key(key) for key in keys)
    assert set(Deployment.objects.values_list("api_base", flat=True)) == {"http://127.0.0.1:8177/v1"}
