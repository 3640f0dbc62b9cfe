"""The fleet's certificate authority: one CA key, the broker's server certificate, one client
certificate per device (CN = device id) and a certificate revocation list.

Everything is made with ``cryptography`` (EC P-256 keys, SHA-256 signatures). Private keys are
written with mode 0600 through :func:`edgeml.provision.secrets.write_secret`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeml.errors import UsageError
from edgeml.provision.secrets import write_public, write_secret

CA_DAYS = 3650
LEAF_DAYS = 825
# The CRL is a local file read by our own broker (no distribution point, nothing to replay), and an
# expired CRL makes Mosquitto refuse EVERY client certificate: it lives as long as the CA. It is
# rewritten whenever a device is provisioned or revoked.
CRL_DAYS = CA_DAYS


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key (PEM bytes), with the serial used for revocation."""

    cert_pem: bytes
    key_pem: bytes
    serial: int
    common_name: str
    not_after: dt.datetime

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the certificate (hex), safe to print."""
        return x509.load_pem_x509_certificate(self.cert_pem).fingerprint(hashes.SHA256()).hex()


class FleetCA:
    """The CA stored in a folder: ``ca.key`` (0600), ``ca.crt`` and ``crl.pem``.

    Use :meth:`load_or_create`. Raises :class:`UsageError` when the folder holds a broken CA.
    """

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.directory = directory
        self.key = key
        self.cert = cert

    # files ---------------------------------------------------------------------
    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @classmethod
    def load_or_create(cls, directory: Path, fleet: str = "default") -> FleetCA:
        """Load the CA from ``directory``, creating a new one (and an empty CRL) when absent."""
        directory = Path(directory)
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if key_path.exists() and cert_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except ValueError as exc:
                raise UsageError(
                    f"the fleet CA in {directory} cannot be read: {exc}",
                    hint="restore ca.key/ca.crt from a backup (every device certificate depends on them)",
                ) from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise UsageError(f"{key_path} is not an EC private key", hint="restore the fleet CA from a backup")
            ca = cls(directory, key, cert)
            if not ca.crl_path.exists():
                ca.write_crl([])
            return ca
        if key_path.exists() or cert_path.exists():
            raise UsageError(
                f"the fleet CA in {directory} is incomplete (ca.key or ca.crt missing)",
                hint="restore the missing file from a backup, or move the folder away to start a new CA",
            )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeml"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"edgeml fleet CA ({fleet})"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_secret(key_path, _key_pem(key))
        write_public(cert_path, _cert_pem(cert))
        ca = cls(directory, key, cert)
        ca.write_crl([])
        return ca

    # issuing -------------------------------------------------------------------
    def _leaf(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName] = (),
        days: int = LEAF_DAYS,
    ) -> IssuedCert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        not_after = now + dt.timedelta(days=days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeml"),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return IssuedCert(_cert_pem(cert), _key_pem(key), serial, common_name, not_after)

    def issue_client(self, common_name: str, days: int = LEAF_DAYS) -> IssuedCert:
        """A client certificate whose CN is the MQTT identity (Mosquitto ``use_identity_as_username``)."""
        return self._leaf(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, days=days)

    def issue_server(self, hostnames: Iterable[str] = (), days: int = LEAF_DAYS) -> IssuedCert:
        """The broker's certificate, valid for ``hostnames`` plus localhost, 127.0.0.1 and this host's name.

        A hostname that parses as an IP address becomes an IP SAN.
        """
        names: list[str] = []
        for name in [*hostnames, "localhost", "127.0.0.1", "::1", socket.gethostname()]:
            if name and name not in names:
                names.append(name)
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        return self._leaf(names[0], ExtendedKeyUsageOID.SERVER_AUTH, sans, days=days)

    # revocation ----------------------------------------------------------------
    def write_crl(self, revoked: Iterable[tuple[int, dt.datetime]]) -> Path:
        """(Re)write ``crl.pem`` listing ``(serial, revoked_at)`` pairs, valid for :data:`CRL_DAYS` days.

        The CRL number increases with every write so that readers can tell newer from older.
        """
        number_path = self.directory / "crl.number"
        number = int(number_path.read_text().strip() or "0") + 1 if number_path.exists() else 1
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=CRL_DAYS))
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        number_path.write_text(f"{number}\n")
        return self.crl_path

    def revoked_serials(self) -> set[int]:
        """Serials listed in the current CRL."""
        crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        return {entry.serial_number for entry in crl}
