"""API key material (tenants/keys.py): recognisable keys, only a digest kept, malformed keys
refused before any lookup, digests compared exactly."""
import hashlib

from tenants.keys import digest_key, digests_match, generate_key, parse_key


def test_it_generates_recognisable_keys_and_keeps_only_a_digest():
    new = generate_key()
    assert new.raw.startswith("ocw_")
    assert new.digest == hashlib.sha256(new.raw.encode()).hexdigest()
    assert new.raw not in new.digest
    assert new.last_four == new.raw[-4:]
    assert parse_key(new.raw).lookup == new.lookup


def test_keys_are_unique():
    assert len({generate_key().raw for _ in range(200)}) == 200


def test_it_rejects_malformed_keys_before_any_lookup():
    good = generate_key().raw
    for bad in ["", "ocw_", "sk-abc", good + "x", good[:-1], good.replace("ocw_", "OCW_"), None, 42, "ocw_" + "a" * 200]:
        assert parse_key(bad) is None


def test_digest_comparison_is_exact():
    raw = generate_key().raw
    assert digests_match(digest_key(raw), digest_key(raw))
    other = "A" if raw[-1] != "A" else "B"  # a different last character, always
    assert not digests_match(digest_key(raw), digest_key(raw[:-1] + other))
