"""Signs model directories for tests/signing.rs with the real OpenSSF `model_signing` tool.

    sign_model.py keys DIR              a P-256 key pair (signer.key, signer.pub), P-384 and
                                        P-521 ones (signer-p384.*, signer-p521.*), another
                                        public key (other.pub), a test CA (ca.pem), a signing
                                        certificate it issued for trainer@example.com (leaf.key,
                                        leaf.pem) and one from an unrelated CA (stranger.*)
    sign_model.py key DIR MODEL SIG [NAME]
                                        signs MODEL with DIR/signer.key (or NAME.key) into SIG
    sign_model.py certificate DIR MODEL SIG [stranger]
                                        signs MODEL with DIR/leaf.* (or stranger.*) into SIG

Signing runs `python -m model_signing sign ...`, the command a training pipeline runs.
"""

import datetime
import pathlib
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IDENTITY = "trainer@example.com"


def write_key(path, key):
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def write_public(path, key):
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def certificate(subject, issuer, public_key, signing_key, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        ).add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(IDENTITY)]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def write_ca_and_leaf(out, ca_name, prefix):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("trainer", ca_name, leaf_key.public_key(), ca_key, ca=False)
    write_key(out / f"{prefix}.key", leaf_key)
    (out / f"{prefix}.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return ca


def keys(out):
    out.mkdir(parents=True, exist_ok=True)
    for name, curve in [("signer", ec.SECP256R1()), ("signer-p384", ec.SECP384R1()),
                        ("signer-p521", ec.SECP521R1())]:
        signer = ec.generate_private_key(curve)
        write_key(out / f"{name}.key", signer)
        write_public(out / f"{name}.pub", signer)
    write_public(out / "other.pub", ec.generate_private_key(ec.SECP256R1()))
    ca = write_ca_and_leaf(out, "pinserve test CA", "leaf")
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    stranger_ca = write_ca_and_leaf(out, "some other CA", "stranger")
    (out / "stranger-ca.pem").write_bytes(stranger_ca.public_bytes(serialization.Encoding.PEM))


def sign(args):
    subprocess.run([sys.executable, "-m", "model_signing", "sign", *args], check=True)


def main():
    command, out = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "keys":
        keys(out)
        return
    model, signature = sys.argv[3], sys.argv[4]
    if command == "key":
        name = sys.argv[5] if len(sys.argv) > 5 else "signer"
        sign(["key", "--private_key", str(out / f"{name}.key"), "--signature", signature, model])
    elif command == "certificate":
        prefix = sys.argv[5] if len(sys.argv) > 5 else "leaf"
        sign([
            "certificate",
            "--private_key", str(out / f"{prefix}.key"),
            "--signing_certificate", str(out / f"{prefix}.pem"),
            "--certificate_chain", str(out / ("ca.pem" if prefix == "leaf" else "stranger-ca.pem")),
            "--signature", signature,
            model,
        ])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
