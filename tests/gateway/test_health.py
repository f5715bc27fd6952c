import pytest


@pytest.mark.django_db
def test_readyz_names_a_failing_dependency_without_its_error(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["checks"]["broker"] == "unavailable"
    assert body["checks"]["database"] == "ok"
