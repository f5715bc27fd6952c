"""Reading settings from the environment (openclaw_site/env.py): a malformed value names its variable."""
import pytest
from django.core.exceptions import ImproperlyConfigured

from openclaw_site.env import env_bool, env_int


def test_a_malformed_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("OPENCLAW_MAX_IN_FLIGHT", "lots")
    with pytest.raises(ImproperlyConfigured, match="OPENCLAW_MAX_IN_FLIGHT"):
        env_int("OPENCLAW_MAX_IN_FLIGHT", 8)
    monkeypatch.setenv("DJANGO_DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DJANGO_DEBUG"):
        env_bool("DJANGO_DEBUG")
