"""Provider credentials encrypted at rest (catalog/crypto.py): the first key encrypts,
every key decrypts, so keys rotate by prepending a new one."""
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from catalog import crypto
from catalog.crypto import decrypt_secret, encrypt_secret, reencrypt_secret

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def keys(settings):
    """Set OPENCLAW_CREDENTIAL_KEYS for a test (the keys are read once, then cached)."""
    def use(*keys):
        settings.CREDENTIAL_KEYS = list(keys)
        crypto._fernet.cache_clear()

    yield use
    crypto._fernet.cache_clear()


def test_a_secret_round_trips_and_is_not_stored_in_clear(keys):
    keys(OLD)
    token = encrypt_secret("sk-live-123")
    assert "sk-live-123" not in token
    assert decrypt_secret(token) == "sk-live-123"
    assert encrypt_secret("sk-live-123") != token  # a fresh nonce each time


def test_a_secret_encrypted_with_another_key_cannot_be_decrypted(keys):
    keys(OLD)
    token = encrypt_secret("sk-live-123")
    keys(NEW)
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted") as info:
        decrypt_secret(token)
    assert token not in str(info.value)


def test_after_a_new_key_is_prepended_old_secrets_still_decrypt_and_reencrypt_to_the_new(keys):
    keys(OLD)
    token = encrypt_secret("sk-live-123")
    keys(NEW, OLD)
    assert decrypt_secret(token) == "sk-live-123"
    rotated = reencrypt_secret(token)
    keys(NEW)  # the old key retired
    assert decrypt_secret(rotated) == "sk-live-123"


def test_a_key_that_is_not_a_fernet_key_is_a_configuration_error(keys):
    keys("not-a-key")
    with pytest.raises(ImproperlyConfigured, match="OPENCLAW_CREDENTIAL_KEYS"):
        encrypt_secret("x")
