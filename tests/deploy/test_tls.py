"""`gravix serve --tls-cert/--tls-key`: HTTPS on loopback with a self-signed certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gravix.config import load_settings
from gravix.errors import ConfigError


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def _serve(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env["GRAVIX_SPOOL_MIN_FREE_BYTES"] = "0"
    return subprocess.Popen(
        [sys.executable, "-m", "gravix.cli", "serve", "--port", "0",
         "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_serve_speaks_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    proc = _serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (https://127\.0\.0\.1:\d+)", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        url = match.group(1)
        trusting = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"{url}/ready", verify=trusting, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.url.scheme == "https"
        assert httpx.get(f"{url}/live", verify=trusting, timeout=2).status_code == 200
        # A client that does not trust the certificate is refused at the handshake,
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/live", timeout=2)
        # and plain HTTP to the TLS port gets no answer.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/live", timeout=2)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)  # also closes the pipes
    assert proc.returncode == 0, stderr


def test_tls_settings_go_together_and_must_exist(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = load_settings(tls_cert_file=cert, tls_key_file=key)
    assert settings.tls_cert_file == cert
    with pytest.raises(ConfigError, match=r"tls_key_file: .*together, or neither"):
        load_settings(tls_cert_file=cert)
    with pytest.raises(ConfigError, match=r"tls_key_file: .*together, or neither"):
        load_settings(tls_key_file=key)
    with pytest.raises(ConfigError, match=r"tls_key_file: .*missing\.pem is not a file"):
        load_settings(tls_cert_file=cert, tls_key_file=tmp_path / "missing.pem")


def test_a_key_that_does_not_match_is_one_line_exit_2(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_key = self_signed(other)
    proc = _serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(wrong_key))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2, stderr
    assert stderr.startswith("error: cannot load TLS certificate") and "Traceback" not in stderr
