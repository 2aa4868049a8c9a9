"""rawserve.serving.tls: the development certificate and the server SSLContext, checked
with real TLS handshakes over memory BIOs."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rawserve.core.errors import ConfigError
from rawserve.serving import tls

UTC = datetime.UTC


@pytest.fixture(scope="module")
def dev_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    certfile, keyfile, _ = tls.ensure_dev_certificate(tmp_path_factory.mktemp("certs"))
    return certfile, keyfile


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "localhost"
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client, server
    raise AssertionError("handshake did not finish")


def client_context(cafile: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def write_cert(certs_dir: Path, not_before: datetime.datetime, days: float) -> bytes:
    cert_pem, key_pem = tls.generate_dev_certificate(not_before, datetime.timedelta(days=days))
    certs_dir.mkdir(parents=True, exist_ok=True)
    (certs_dir / tls.DEV_CERT_NAME).write_bytes(cert_pem)
    (certs_dir / tls.DEV_KEY_NAME).write_bytes(key_pem)
    return cert_pem


# -- development certificate ------------------------------------------------------


def test_dev_certificate_covers_localhost_and_both_loopback_addresses(tmp_path: Path) -> None:
    certfile, keyfile, generated = tls.ensure_dev_certificate(tmp_path / "certs")
    assert generated
    assert (certfile.name, keyfile.name) == ("dev-cert.pem", "dev-key.pem")
    cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(UTC)
    assert datetime.timedelta(days=364) < lifetime <= datetime.timedelta(days=366)
    assert keyfile.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(keyfile.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_dev_certificate_verifies_for_each_name(dev_cert: tuple[Path, Path], host: str) -> None:
    certfile, keyfile = dev_cert
    server_ctx = tls.create_server_ssl_context(str(certfile), str(keyfile))
    client, _ = handshake(server_ctx, client_context(certfile), server_hostname=host)
    assert client.getpeercert() is not None


def test_dev_certificate_is_reused_on_later_starts(tmp_path: Path) -> None:
    certfile, keyfile, first = tls.ensure_dev_certificate(tmp_path)
    cert_pem, key_pem = certfile.read_bytes(), keyfile.read_bytes()
    again = tls.ensure_dev_certificate(tmp_path)
    assert first
    assert again == (certfile, keyfile, False)
    assert (certfile.read_bytes(), keyfile.read_bytes()) == (cert_pem, key_pem)


@pytest.mark.parametrize(
    ("start_days_ago", "days"),
    [(0, 3), (400, 365)],
    ids=["expiring-within-7-days", "expired"],
)
def test_dev_certificate_is_regenerated_when_expiring(
    tmp_path: Path, start_days_ago: int, days: int
) -> None:
    now = datetime.datetime.now(UTC)
    old = write_cert(tmp_path, now - datetime.timedelta(days=start_days_ago), days)
    certfile, _, generated = tls.ensure_dev_certificate(tmp_path)
    assert generated
    assert certfile.read_bytes() != old
    cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=300)


def test_certificate_valid_for_more_than_a_week_is_kept(tmp_path: Path) -> None:
    old = write_cert(tmp_path, datetime.datetime.now(UTC), 10)
    certfile, _, generated = tls.ensure_dev_certificate(tmp_path)
    assert not generated
    assert certfile.read_bytes() == old


def test_unusable_dev_certificate_is_replaced(tmp_path: Path) -> None:
    (tmp_path / tls.DEV_CERT_NAME).write_text("not a certificate")
    (tmp_path / tls.DEV_KEY_NAME).write_text("not a key")
    certfile, keyfile, generated = tls.ensure_dev_certificate(tmp_path)
    assert generated
    assert tls.load_certificate_error(str(certfile), str(keyfile)) is None


def test_certs_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as info:
        tls.ensure_dev_certificate(blocker / "certs")
    message = str(info.value)
    assert "\n" not in message
    assert str(blocker / "certs") in message


# -- server context ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1")],
)
def test_alpn_prefers_h2(dev_cert: tuple[Path, Path], offered: list[str], chosen: str) -> None:
    certfile, keyfile = dev_cert
    server_ctx = tls.create_server_ssl_context(str(certfile), str(keyfile))
    client, server = handshake(server_ctx, client_context(certfile, offered))
    assert client.selected_alpn_protocol() == chosen
    assert server.selected_alpn_protocol() == chosen


def test_alpn_list_is_configurable(dev_cert: tuple[Path, Path]) -> None:
    certfile, keyfile = dev_cert
    server_ctx = tls.create_server_ssl_context(str(certfile), str(keyfile), alpn=["http/1.1"])
    client, _ = handshake(server_ctx, client_context(certfile, ["h2", "http/1.1"]))
    assert client.selected_alpn_protocol() == "http/1.1"


def test_context_refuses_compression_and_old_protocols(dev_cert: tuple[Path, Path]) -> None:
    certfile, keyfile = dev_cert
    ctx = tls.create_server_ssl_context(str(certfile), str(keyfile))
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_tls12_negotiates_an_ecdhe_aead_suite(dev_cert: tuple[Path, Path]) -> None:
    certfile, keyfile = dev_cert
    server_ctx = tls.create_server_ssl_context(str(certfile), str(keyfile))
    client_ctx = client_context(certfile, ["h2"])
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client, _ = handshake(server_ctx, client_ctx)
    cipher = client.cipher()
    assert cipher is not None
    name, version, _ = cipher
    assert version == "TLSv1.2"
    assert name.startswith("ECDHE-")
    assert "GCM" in name or "CHACHA20" in name


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_tls12_refuses_ciphers_on_the_rfc9113_block_list(
    dev_cert: tuple[Path, Path], cipher: str
) -> None:
    certfile, keyfile = dev_cert
    server_ctx = tls.create_server_ssl_context(str(certfile), str(keyfile))
    client_ctx = client_context(certfile, ["h2"])
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.set_ciphers(cipher)
    with pytest.raises(ssl.SSLError):
        handshake(server_ctx, client_ctx)


def test_tls12_cipher_list_has_only_allowed_suites() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(tls.H2_TLS12_CIPHERS)
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for c in tls12:
        assert c["kea"] == "kx-ecdhe", c["name"]
        assert c["aead"], c["name"]


# -- unusable certificates --------------------------------------------------------


def other_key(tmp_path: Path, password: bytes | None = None) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path = tmp_path / ("encrypted.pem" if password else "other-key.pem")
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def test_usable_certificate_has_no_error(dev_cert: tuple[Path, Path]) -> None:
    certfile, keyfile = dev_cert
    assert tls.load_certificate_error(str(certfile), str(keyfile)) is None


def test_certificate_and_key_in_one_file(dev_cert: tuple[Path, Path], tmp_path: Path) -> None:
    certfile, keyfile = dev_cert
    both = tmp_path / "both.pem"
    both.write_bytes(certfile.read_bytes() + keyfile.read_bytes())
    assert tls.load_certificate_error(str(both), None) is None


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-cert", "cannot read certificate file"),
        ("missing-key", "cannot read key file"),
        ("directory", "cannot read certificate file"),
        ("garbage-cert", "holds no PEM certificate"),
        ("garbage-key", "holds no PEM private key"),
        ("key-as-cert", "holds no PEM certificate"),
        ("mismatched-key", "does not match"),
        ("encrypted-key", "is encrypted"),
    ],
)
def test_unusable_certificate_gives_a_one_line_reason(
    dev_cert: tuple[Path, Path], tmp_path: Path, case: str, expected: str
) -> None:
    certfile, keyfile = dev_cert
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    cert, key = {
        "missing-cert": (tmp_path / "nope.pem", keyfile),
        "missing-key": (certfile, tmp_path / "nope.pem"),
        "directory": (tmp_path, keyfile),
        "garbage-cert": (garbage, keyfile),
        "garbage-key": (certfile, garbage),
        "key-as-cert": (keyfile, keyfile),
        "mismatched-key": (certfile, other_key(tmp_path)),
        "encrypted-key": (certfile, other_key(tmp_path, b"secret")),
    }[case]
    reason = tls.load_certificate_error(str(cert), str(key))
    assert reason is not None
    assert expected in reason
    assert "\n" not in reason
    with pytest.raises(ConfigError) as info:
        tls.create_server_ssl_context(str(cert), str(key))
    assert str(info.value) == reason
