"""The CA lookup the transfer service sets up at start (``gfal.ca_by_hash``): the system's CAs found by hash, not
the whole bundle parsed for each of davix's TLS sessions; an operator's own choice is kept."""

from __future__ import annotations

import os
import ssl

from datalake.storage.gfal import ca_by_hash


def test_the_ca_file_is_left_empty_when_the_same_cas_are_in_a_hashed_directory(monkeypatch, tmp_path):
    (tmp_path / "5ad8a5d6.0").write_text("a CA, as update-ca-certificates links it")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    ca_by_hash()
    assert os.environ["SSL_CERT_FILE"] == os.devnull
    monkeypatch.setenv("SSL_CERT_FILE", ssl.get_default_verify_paths().openssl_cafile)  # as many images set it
    ca_by_hash()  # the system's own bundle named explicitly is no choice of another: found by hash too
    assert os.environ["SSL_CERT_FILE"] == os.devnull


def test_an_operators_ca_file_and_a_directory_without_hash_links_are_left_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/site/ca.pem")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    ca_by_hash()
    assert os.environ["SSL_CERT_FILE"] == "/etc/site/ca.pem"
    monkeypatch.delenv("SSL_CERT_FILE")
    (tmp_path / "bundle.pem").write_text("not a hash link")
    ca_by_hash()  # nothing to find the CAs by: the bundle stays the default
    assert "SSL_CERT_FILE" not in os.environ
