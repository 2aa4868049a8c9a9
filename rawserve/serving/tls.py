"""TLS for the server: the SSLContext, and a development certificate for localhost."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rawserve.core.errors import ConfigError

DEV_CERT_NAME = "dev-cert.pem"
DEV_KEY_NAME = "dev-key.pem"
DEV_CERT_VALIDITY = datetime.timedelta(days=365)
# A certificate this close to expiry is replaced at startup rather than reused,
# so a long-running dev server does not cross its expiry date.
DEV_CERT_RENEW_BEFORE = datetime.timedelta(days=7)

# RFC 9113 9.2.2: HTTP/2 over TLS 1.2 must use an ephemeral key exchange and an
# AEAD cipher; every other TLS 1.2 suite is on the Appendix A block list (a
# peer may answer INADEQUATE_SECURITY). ECDHE with AES-GCM or ChaCha20-Poly1305
# is the whole allowed set we offer. TLS 1.3 suites are all allowed and are
# configured separately by OpenSSL.
H2_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


def create_server_ssl_context(
    certfile: str,
    keyfile: str | None = None,
    alpn: Sequence[str] = ("h2", "http/1.1"),
) -> ssl.SSLContext:
    """A server context: TLS 1.2+, no compression or renegotiation, ECDHE + AEAD only.

    ``keyfile`` may be None when ``certfile`` holds the key too. Raises
    ConfigError when the certificate or key cannot be used.
    """
    reason = load_certificate_error(certfile, keyfile)
    if reason is not None:
        raise ConfigError(reason)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # RFC 9113 9.2.1: no TLS compression (CRIME) and no renegotiation.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(H2_TLS12_CIPHERS)
    context.load_cert_chain(certfile, keyfile, password=_no_password)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def load_certificate_error(certfile: str, keyfile: str | None) -> str | None:
    """Why ``certfile``/``keyfile`` cannot serve TLS, in one line; None if they can.

    ``keyfile`` None means the key is in ``certfile``.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    keypath = keyfile or certfile
    try:
        cert_data = _read(certfile, "certificate")
        key_data = _read(keypath, "key")
    except ConfigError as exc:
        return str(exc)
    try:
        certs = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        return f"certificate file {certfile} holds no PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        return f"key file {keypath} is encrypted; give an unencrypted key"
    except UnsupportedAlgorithm as exc:
        return f"key file {keypath} holds an unsupported key: {exc}"
    except ValueError:
        return f"key file {keypath} holds no PEM private key"
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != certs[0].public_key().public_bytes(*public):
        return f"key file {keypath} does not match certificate {certfile}"
    # OpenSSL has the last word (key types or sizes it refuses, broken chains).
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            certfile, keyfile, password=_no_password
        )
    except (ssl.SSLError, ConfigError) as exc:
        return f"cannot use certificate {certfile} with key {keypath}: {_ssl_reason(exc)}"
    except OSError as exc:
        return f"cannot load certificate {certfile}: {exc.strerror or exc}"
    return None


def ensure_dev_certificate(certs_dir: Path) -> tuple[Path, Path, bool]:
    """(certfile, keyfile, newly_generated) for a self-signed localhost certificate.

    An existing certificate in ``certs_dir`` is reused unless it is unusable or
    expires within DEV_CERT_RENEW_BEFORE.
    """
    certs_dir = Path(certs_dir)
    certfile = certs_dir / DEV_CERT_NAME
    keyfile = certs_dir / DEV_KEY_NAME
    now = datetime.datetime.now(datetime.UTC)
    if _reusable(certfile, keyfile, now):
        return certfile, keyfile, False
    try:
        certs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create certificate directory {certs_dir}: {exc.strerror or exc}"
        ) from None
    cert_pem, key_pem = generate_dev_certificate(now)
    try:
        _write_atomic(keyfile, key_pem, 0o600)
        _write_atomic(certfile, cert_pem, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot write development certificate into {certs_dir}: {exc.strerror or exc}"
        ) from None
    return certfile, keyfile, True


def generate_dev_certificate(
    now: datetime.datetime, validity: datetime.timedelta = DEV_CERT_VALIDITY
) -> tuple[bytes, bytes]:
    """PEM (certificate, unencrypted PKCS#8 key): EC P-256, self-signed for
    localhost, 127.0.0.1 and ::1, valid from ``now`` for ``validity``."""
    # cryptography is imported inside functions so that importing rawserve.serving.tls
    # (and with it the CLI's --help) stays cheap.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rawserve development"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little so a client whose clock lags still accepts it.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Key identifiers keep strict verifiers (Python 3.13's VERIFY_X509_STRICT)
        # happy when the certificate is used as its own trust anchor.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def _reusable(certfile: Path, keyfile: Path, now: datetime.datetime) -> bool:
    if not (certfile.is_file() and keyfile.is_file()):
        return False
    if load_certificate_error(str(certfile), str(keyfile)) is not None:
        return False
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - now > DEV_CERT_RENEW_BEFORE


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # The key is created with its final mode (never briefly world-readable) and
    # renamed into place, so a concurrent start never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: str, label: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {label} file {path}: {exc.strerror or exc}") from None


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ConfigError("the key file is encrypted; give an unencrypted key")


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate"
    text = reason.replace("_", " ").lower() if isinstance(reason, str) else str(exc)
    return text.splitlines()[0] if text else "invalid certificate or key"
