"""Signing keys: RFC 7638 kids, key files, the key ring's rules."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from portico_auth.keys import (
    KeyConfigError,
    generate_key_file,
    load_key_file,
    load_key_ring,
    thumbprint,
)


def test_the_kid_is_the_rfc_7638_thumbprint() -> None:
    # RFC 8037 appendix A.3: the thumbprint of the example Ed25519 public key.
    assert (
        thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


def test_generate_key_file_writes_a_private_pem_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "signing-key.pem"

    kid = generate_key_file(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    key = load_key_file(path)
    assert key.kid == kid == thumbprint(key.x)
    assert key.jwk() == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": key.x,
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
    }
    with pytest.raises(FileExistsError):
        generate_key_file(path)


def test_the_active_kid_chooses_the_signing_key(tmp_path: Path) -> None:
    first = generate_key_file(tmp_path / "a.pem")
    second = generate_key_file(tmp_path / "b.pem")
    files = [tmp_path / "a.pem", tmp_path / "b.pem"]

    default = load_key_ring(files, active_kid="", environment="production")
    chosen = load_key_ring(files, active_kid=second, environment="production")

    assert default.active.kid == first
    assert [k.kid for k in chosen.keys] == [second, first]
    assert chosen.get(first) is not None
    assert chosen.get("nope") is None
    with pytest.raises(KeyConfigError, match="AUTH_ACTIVE_KID"):
        load_key_ring(files, active_kid="unknown", environment="production")


def test_bad_key_files_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    ec = generate_private_key(SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ec.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "junk.pem").write_text("not a key")

    with pytest.raises(KeyConfigError, match="not an Ed25519 key"):
        load_key_file(tmp_path / "ec.pem")
    with pytest.raises(KeyConfigError, match="not an unencrypted PEM"):
        load_key_file(tmp_path / "junk.pem")
    with pytest.raises(KeyConfigError, match="cannot read"):
        load_key_file(tmp_path / "missing.pem")


def test_no_key_files_production_refuses_dev_warns(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(KeyConfigError, match="production never generates keys"):
        load_key_ring([], active_kid="", environment="production")

    with caplog.at_level(logging.WARNING):
        ring = load_key_ring([], active_kid="", environment="dev")

    assert ring.keys == (ring.active,)
    assert "EPHEMERAL" in caplog.text
