"""The node's identity on disk and the TLS contexts built from it (SPEC 2, SPEC 3).

Files in the data dir, all created on first start:

    node.key            the secp256k1 secret, 64 hex digits, mode 0600 (or the operator's own file)
    node_cert.pem       self-signed X.509 certificate of that key (CN and SAN URI = the 0x address)
    node_key.pem        the same secret as PKCS#8 PEM, mode 0600, because ``ssl`` only loads key files
    rpc_cert.pem        self-signed P-256 certificate for JSON-RPC over HTTPS (SPEC 3, 8)
    rpc_key.pem         its key, mode 0600

EdgeV2 and peer ports speak TLS 1.2 only, ECDHE on secp256k1 with ECDSA secp256k1 certificates and
AEAD ciphers (SPEC 3): OpenSSL's TLS 1.3 has no secp256k1 signature scheme. Clients do not verify a
CA (every node is self-signed); they derive the node's address from the certificate's public key
with :func:`node_address_from_cert` and compare it with the address they expected.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chrnode.crypto import PrivateKey, address_of_public_key
from chrnode.errors import CryptoError

__all__ = [
    "EDGE_CIPHERS",
    "NodeIdentity",
    "check_secp256k1_tls_support",
    "edge_client_context",
    "edge_server_context",
    "ensure_node_certificate",
    "ensure_rpc_certificate",
    "load_node_identity",
    "load_or_create_node_key",
    "node_address_from_cert",
    "node_certificate_der",
    "tls_unique",
]

log = logging.getLogger("chrnode.identity")

# SPEC 3: exactly these, in this order of preference.
EDGE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    )
)
EDGE_CURVE = "secp256k1"

KEY_FILE = "node.key"
NODE_CERT_FILE = "node_cert.pem"
NODE_KEY_PEM_FILE = "node_key.pem"
RPC_CERT_FILE = "rpc_cert.pem"
RPC_KEY_FILE = "rpc_key.pem"

# Self-signed certificates carry no trust, so a long validity only spares operators a renewal.
NODE_CERT_VALIDITY = datetime.timedelta(days=100 * 365)
RPC_CERT_VALIDITY = datetime.timedelta(days=10 * 365)
# Regenerate a certificate this long before it expires.
RENEW_MARGIN = datetime.timedelta(days=30)


@dataclass(frozen=True)
class NodeIdentity:
    """The node key and the files of its TLS certificate."""

    key: PrivateKey
    cert_path: Path
    key_pem_path: Path

    @property
    def address(self) -> bytes:
        return self.key.address


# --- key file -------------------------------------------------------------------------------------


def load_or_create_node_key(path: Path) -> PrivateKey:
    """Load the node key from ``path`` or, when the file does not exist, create it (mode 0600).

    Refuses a key file that anyone on the machine may read or write, and a file whose content is
    not 64 hex digits of a valid secp256k1 key.
    """
    path = Path(path)
    try:
        return _load_key_file(path)
    except FileNotFoundError:
        pass
    key = PrivateKey.generate()
    try:
        _write_private_file(path, (key.to_hex() + "\n").encode("ascii"), exclusive=True)
    except FileExistsError:
        # Another process created it between our read and our write: use theirs.
        return _load_key_file(path)
    log.info("created node key %s for node %s", path, key.hex_address)
    return key


def _load_key_file(path: Path) -> PrivateKey:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CryptoError(f"cannot read node key file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CryptoError(f"node key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise CryptoError(
            f"node key file {path} has mode {mode:04o}, which lets any user read or change it; "
            f"run 'chmod 600 {path}' (expected owner-only access, 0600)"
        )
    if mode & 0o070:
        log.warning("node key file %s has mode %04o; 0600 is recommended", path, mode)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CryptoError(f"cannot read node key file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CryptoError(f"node key file {path} must hold 64 hex digits (ASCII), found binary data") from exc
    try:
        return PrivateKey.from_hex(text)
    except CryptoError as exc:
        raise CryptoError(f"node key file {path} is malformed: {exc}") from exc


def _write_private_file(path: Path, data: bytes, *, exclusive: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (temp file + link/rename, fsynced).

    With ``exclusive`` an existing ``path`` is never replaced (FileExistsError instead). Other OS
    errors become CryptoError naming the file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    except OSError as exc:
        raise CryptoError(f"cannot create {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails with FileExistsError rather than replacing
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except FileExistsError:
        raise
    except OSError as exc:
        raise CryptoError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- certificates ---------------------------------------------------------------------------------


def _crypto_key(key: PrivateKey) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(key.to_bytes(), "big"), ec.SECP256K1())


def _self_signed(
    private: ec.EllipticCurvePrivateKey,
    common_name: str,
    san: list[x509.GeneralName],
    validity: datetime.timedelta,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(secrets.randbits(63) + 1)
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate clients with a slow clock
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    return builder.sign(private, hashes.SHA256())


def node_certificate_der(key: PrivateKey) -> bytes:
    """A fresh self-signed certificate of the node key, DER. CN and SAN URI ``chr:0x<address>``."""
    hex_address = key.hex_address
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"chr:{hex_address}")]
    cert = _self_signed(_crypto_key(key), hex_address, san, NODE_CERT_VALIDITY)
    return cert.public_bytes(serialization.Encoding.DER)


def node_address_from_cert(der: bytes) -> bytes:
    """The 20-byte address of the secp256k1 public key in a DER certificate (never read from the CN)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        public = cert.public_key()
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"peer certificate is not a valid DER X.509 certificate: {exc}") from exc
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256K1):
        raise CryptoError("peer certificate key must be an EC key on secp256k1 (SPEC 3)")
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return address_of_public_key(point[1:])


def _cert_is_current(cert_path: Path, expected_public: bytes) -> bool:
    """Whether the certificate file exists, is for this public key and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        log.warning("replacing unreadable certificate %s: %s", cert_path, exc)
        return False
    public = cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_MARGIN
    return public == expected_public and fresh


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _pkcs8_pem(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_node_certificate(key: PrivateKey, directory: Path) -> tuple[Path, Path]:
    """Write (or keep) the node's certificate and PEM key in ``directory``: (cert_path, key_pem_path).

    The certificate is regenerated whenever it does not match ``key`` (the operator changed keys) or
    is close to expiry.
    """
    directory = Path(directory)
    cert_path, key_pem_path = directory / NODE_CERT_FILE, directory / NODE_KEY_PEM_FILE
    key_pem = _pkcs8_pem(_crypto_key(key))  # deterministic for a given key
    if not _cert_is_current(cert_path, b"\x04" + key.public_key) or _read_or_none(key_pem_path) != key_pem:
        der = node_certificate_der(key)
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        _write_private_file(key_pem_path, key_pem, exclusive=False)
        _write_private_file(cert_path, pem, exclusive=False)
        log.info("wrote node certificate %s for %s", cert_path, key.hex_address)
    return cert_path, key_pem_path


def load_node_identity(
    data_dir: Path, key_path: Path | None = None, check_certificate: bool = True
) -> NodeIdentity:
    """The node key (``key_path`` or ``<data_dir>/node.key``, created if missing) and its TLS files.

    With ``check_certificate=False`` existing certificate files are taken as they are (an actor of
    a node whose daemon checked them at start: checking again loads cryptography's OpenSSL in that
    process, 1.4 MiB of private memory); missing files are still made.
    """
    data_dir = Path(data_dir)
    key = load_or_create_node_key(Path(key_path) if key_path is not None else data_dir / KEY_FILE)
    cert_path, key_pem_path = data_dir / NODE_CERT_FILE, data_dir / NODE_KEY_PEM_FILE
    if check_certificate or not (cert_path.exists() and key_pem_path.exists()):
        cert_path, key_pem_path = ensure_node_certificate(key, data_dir)
    return NodeIdentity(key=key, cert_path=cert_path, key_pem_path=key_pem_path)


def ensure_rpc_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for JSON-RPC over HTTPS, made once: (cert_path, key_path)."""
    directory = Path(directory)
    cert_path, key_path = directory / RPC_CERT_FILE, directory / RPC_KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    private = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
        x509.IPAddress(ipaddress.IPv6Address("::1")),
    ]
    cert = _self_signed(private, "chr-node rpc", san, RPC_CERT_VALIDITY)
    _write_private_file(key_path, _pkcs8_pem(private), exclusive=False)
    _write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), exclusive=False)
    log.info("wrote self-signed RPC certificate %s", cert_path)
    return cert_path, key_path


# --- TLS contexts ---------------------------------------------------------------------------------


def _edge_common(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """SPEC 3 settings shared by both sides."""
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(EDGE_CIPHERS)
        ctx.set_ecdh_curve(EDGE_CURVE)
    except (ssl.SSLError, ValueError) as exc:
        raise CryptoError(
            f"this OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer the EdgeV2 TLS suite of SPEC 3: {exc}"
        ) from exc
    # Renegotiation would change tls-unique under the hello proof (SPEC 3); compression leaks (CRIME).
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    return ctx


def edge_server_context(key_path: Path, cert_path: Path) -> ssl.SSLContext:
    """Server context for the EdgeV2 and peer ports: TLS 1.2, ECDHE secp256k1, ECDSA-AEAD only."""
    ctx = _edge_common(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    # No session resumption: tls-unique of a resumed session is weaker (triple handshake), and
    # tickets cost memory per connection for no gain on long-lived device links.
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    ctx.verify_mode = ssl.CERT_NONE  # devices prove their key inside the session (hello, SPEC 3)
    try:
        ctx.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    except (OSError, ssl.SSLError) as exc:
        raise CryptoError(f"cannot load node certificate {cert_path} with key {key_path}: {exc}") from exc
    return ctx


def edge_client_context() -> ssl.SSLContext:
    """Client context for EdgeV2/peer: no CA check (self-signed); compare node_address_from_cert instead."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return _edge_common(ctx)


def tls_unique(sslobj: ssl.SSLObject | ssl.SSLSocket) -> bytes:
    """The tls-unique channel binding of a finished handshake (the hello proof signs it, SPEC 3)."""
    binding = sslobj.get_channel_binding("tls-unique")
    if not binding:
        raise CryptoError("tls-unique is not available: the TLS handshake has not completed")
    return binding


_tls_support_checked = False


def check_secp256k1_tls_support() -> None:
    """Raise CryptoError unless this Python's OpenSSL completes a TLS 1.2 handshake on secp256k1.

    OpenSSL 3.5+ turns the secp256k1 TLS group off by default (SPEC 3); the node must refuse to start
    there rather than fail every device. The check is a real in-memory handshake, run once.
    """
    global _tls_support_checked
    if _tls_support_checked:
        return
    with tempfile.TemporaryDirectory(prefix="chr-tlscheck-") as tmp:
        cert_path, key_path = ensure_node_certificate(PrivateKey.generate(), Path(tmp))
        try:
            server = edge_server_context(key_path, cert_path)
            client = edge_client_context()
            cipher = _memory_handshake(server, client)
        except (CryptoError, ssl.SSLError) as exc:
            raise CryptoError(
                f"the running OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer the secp256k1 TLS group "
                f"that EdgeV2 requires (SPEC 3): {exc}. Use Python's ssl linked against OpenSSL 3.0-3.4 "
                f"(e.g. Debian bookworm)."
            ) from exc
    if not cipher.startswith("ECDHE-ECDSA-"):
        raise CryptoError(f"secp256k1 handshake negotiated {cipher}, expected an ECDHE-ECDSA AEAD suite")
    _tls_support_checked = True


def _memory_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str:
    """Handshake two contexts through memory BIOs; return the negotiated cipher name."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):  # TLS 1.2 needs 2 round trips; 20 steps is plenty and bounds a stuck loop
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done["client"] and done["server"]:
            cipher = client.cipher()
            return cipher[0] if cipher else ""
    raise CryptoError("in-memory TLS handshake did not complete")
