from __future__ import annotations

from pathlib import Path

import pytest

from llmrouter.gateway.config import hash_api_key
from llmrouter.standalone import KeysFileError, load_keys_file


def test_keys_and_hashes(tmp_path: Path) -> None:
    digest = hash_api_key("llmr_only_the_hash_is_written")
    path = tmp_path / "keys.yaml"
    path.write_text(f"acme:\n  a: llmr_plain_key_123456789\nteam/b:\n  c: sha256:{digest}\n")
    assert load_keys_file(path) == {
        ("default/acme", "a"): hash_api_key("llmr_plain_key_123456789"),
        ("team/b", "c"): digest,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("acme: [a, b]\n", "expected a mapping of key name → key"),
        ("- x\n", "expected a mapping of tenant → key name → key"),
        ("acme:\n  a: short\n", "at least 16 characters"),
        (
            "acme:\n  a: llmr_aaaaaaaaaaaaaaaaaaa\nacme:\n  b: llmr_bbbbbbbbbbbbbbbbbbbb\n",
            "found duplicate key 'acme'",
        ),
        ("acme: {a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_keys_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysFileError, match=message):
        load_keys_file(path)


def test_missing_keys_file(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="cannot read"):
        load_keys_file(tmp_path / "nope.yaml")


def test_a_digest_is_a_digest_whatever_its_case(tmp_path: Path) -> None:
    digest = hash_api_key("llmr_only_the_hash_is_written")
    path = tmp_path / "keys.yaml"
    path.write_text(f"acme:\n  upper: sha256:{digest.upper()}\n  prefix: SHA256:{digest}\n")
    found = load_keys_file(path)
    assert found == {("default/acme", "upper"): digest, ("default/acme", "prefix"): digest}
    # Read as a literal key, the digest string itself would have been a working key.
    assert hash_api_key(f"sha256:{digest.upper()}") not in found.values()


@pytest.mark.parametrize(
    "entry",
    [
        "sha256:" + "ab" * 31,  # too short
        "sha256:" + "g" * 64,  # not hex
        "sha256: " + "a" * 64,  # a space
        "sha256:" + "a" * 64 + "00",  # too long
    ],
)
def test_a_malformed_digest_is_an_error_naming_its_line(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"acme:\n  a: llmr_plain_key_123456789\n  ci-bot: '{entry}'\n")
    with pytest.raises(KeysFileError) as err:
        load_keys_file(path)
    assert str(err.value).startswith(f"{path}:3: acme.ci-bot: a sha256: entry must be")
