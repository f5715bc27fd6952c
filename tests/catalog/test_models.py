"""The catalogue's models (catalog/models.py): a credential is encrypted at rest, a
route's candidate belongs to the route's org."""
import pytest

from catalog.models import Route, RouteCandidate


def test_a_candidate_of_another_org_is_refused(db, org, other_org, make_deployment):
    from django.core.exceptions import ValidationError

    route = Route.objects.create(alias="mine", org=org)
    candidate = RouteCandidate(route=route, deployment=make_deployment("theirs", org=other_org))
    with pytest.raises(ValidationError, match="own org"):
        candidate.full_clean()


def test_the_credential_is_encrypted_at_rest(mock_credential):
    from catalog.models import ProviderCredential

    row = ProviderCredential.objects.get(pk=mock_credential.pk)
    assert "mock-key-for-tests" not in row.encrypted_secret
    assert row.get_secret() == "mock-key-for-tests"
