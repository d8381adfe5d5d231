"""A self-signed certificate for 127.0.0.1, so dedicated endpoints can be served over HTTPS the
way the SDK calls them (`https://{dedicatedEndpointDns}/v1/...`)."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import ssl
from pathlib import Path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Writes cert.pem and key.pem (reused when present); returns their paths."""
    cert_path, key_path = directory / "emulator-cert.pem", directory / "emulator-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: a trust bundle may hold certificates of several emulators, and
    # OpenSSL picks the issuer by name, so equal names would make verification fail.
    unique = secrets.token_hex(4)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nbhelpers emulator {unique}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
