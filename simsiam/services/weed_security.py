"""SeaweedFS's own keys, so that only the S3 port (which checks our identity) serves objects:
a private CA and one certificate for mutual TLS on every gRPC and on the master/volume/admin
HTTP ports, and JWT keys that the volume server demands for every read and write. Made once per
state dir, mode 0600, in `<state>/s3/security/` (weed's `-config_dir`)."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

from simsiam.services.state import private_dir, write_private

GRPC_ROLES = ("master", "volume", "filer", "s3", "admin", "worker", "client")
HTTPS_ROLES = ("master", "volume", "admin")


def _pem_pair(days: int = 3650) -> tuple[bytes, bytes, bytes]:
    """(CA cert, leaf cert, leaf key): the leaf is both server and client (weed checks the CA only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def cert(subject, issuer, public_key, sign_key, ca: bool, extra=()):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
             .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
        for ext in extra:
            b = b.add_extension(ext, critical=False)
        return b.sign(sign_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "simsiam-weed-ca")])
    ca = cert(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "simsiam-weed")]), ca_name, leaf_key.public_key(),
                ca_key, False, [names, usage])
    pem = serialization.Encoding.PEM
    key = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), leaf.public_bytes(pem), key


def _security_toml(d: Path) -> str:
    ca, crt, key = d / "ca.crt", d / "weed.crt", d / "weed.key"
    lines = []
    for section, ttl in (("jwt.signing", 10), ("jwt.signing.read", 60), ("jwt.filer_signing", 10),
                         ("jwt.filer_signing.read", 60)):
        lines += [f"[{section}]", f'key = "{secrets.token_hex(32)}"', f"expires_after_seconds = {ttl}"]
    lines += ["[grpc]", f'ca = "{ca}"']
    for role in GRPC_ROLES:
        lines += [f"[grpc.{role}]", f'cert = "{crt}"', f'key = "{key}"']
    for role in HTTPS_ROLES:
        lines += [f"[https.{role}]", f'cert = "{crt}"', f'key = "{key}"', f'ca = "{ca}"']
    lines += ["[https.client]", "enabled = true", f'cert = "{crt}"', f'key = "{key}"', f'ca = "{ca}"']
    return "\n".join(lines) + "\n"


def weed_config_dir(state: Path) -> Path:
    """The dir holding security.toml and its certificates, made on first use."""
    d = private_dir(state / "s3" / "security")
    if not (d / "security.toml").exists():
        for name, data in zip(("ca.crt", "weed.crt", "weed.key"), _pem_pair()):
            write_private(d / name, data.decode())
        write_private(d / "security.toml", _security_toml(d))  # last: its presence means complete
    return d
