"""TLS/SASL settings reach every Kafka client (kafka-python and Faust's aiokafka) with the same
trust and identity; PostgreSQL TLS options pass through ICU_DATABASE_URL; secrets can come from
files (ICU_SECRETS_DIR) and are never printed. No TLS broker is needed: the client arguments are
pure functions of the settings."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from alerts.app import AlertSettings, broker_credentials
from icu.settings import ConfigError, DatabaseSettings, KafkaSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("ICU_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA and a client certificate signed by it (PEM files)."""
    folder = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)

    def certificate(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer, *, ca: bool):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer if not ca else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("icu test CA", ca_key, x509.Name([]), ca_key, ca=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = certificate("icu", client_key, ca_cert.subject, ca_key, ca=False)
    paths = {"ca": folder / "ca.crt", "cert": folder / "client.crt", "key": folder / "client.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-passphrase"),
        )
    )
    return paths


def _sasl_ssl(monkeypatch, pki, **extra: str) -> None:
    variables = {
        "ICU_KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9093,kafka-1:9093",
        "ICU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ICU_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "ICU_KAFKA_SASL_USERNAME": "icu",
        "ICU_KAFKA_SASL_PASSWORD": "s3cret-sasl-password",
        "ICU_KAFKA_SSL_CAFILE": str(pki["ca"]),
        **extra,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_sasl_ssl_gives_kafka_python_every_option(monkeypatch, pki):
    _sasl_ssl(monkeypatch, pki, ICU_KAFKA_SSL_CERTFILE=str(pki["cert"]), ICU_KAFKA_SSL_KEYFILE=str(pki["key"]),
              ICU_KAFKA_SSL_PASSWORD="key-passphrase")  # fmt: skip
    config = load_settings(KafkaSettings).kafka_client_config()
    assert config["bootstrap_servers"] == ["kafka-0:9093", "kafka-1:9093"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "icu"
    assert config["sasl_plain_password"] == "s3cret-sasl-password"
    assert config["ssl_cafile"] == str(pki["ca"])
    assert config["ssl_certfile"] == str(pki["cert"])
    assert config["ssl_keyfile"] == str(pki["key"])
    assert config["ssl_password"] == "key-passphrase"
    assert config["ssl_check_hostname"] is True


def test_sasl_ssl_gives_faust_the_same_login_and_trust(monkeypatch, pki):
    _sasl_ssl(monkeypatch, pki, ICU_KAFKA_SSL_CERTFILE=str(pki["cert"]), ICU_KAFKA_SSL_KEYFILE=str(pki["key"]),
              ICU_KAFKA_SSL_PASSWORD="key-passphrase")  # fmt: skip
    settings = load_settings(AlertSettings)
    auth = credentials_to_aiokafka_auth(broker_credentials(settings))
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "icu"
    assert auth["sasl_plain_password"] == "s3cret-sasl-password"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    # the CA from ICU_KAFKA_SSL_CAFILE is the one trusted
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "icu test CA"),),)]
    assert "s3cret-sasl-password" not in repr(broker_credentials(settings))


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("PLAINTEXT", None), ("SSL", "SSL"), ("SASL_PLAINTEXT", "SASL_PLAINTEXT"), ("SASL_SSL", "SASL_SSL")],
)
def test_every_protocol_maps_to_faust(monkeypatch, pki, protocol, expected):
    _sasl_ssl(monkeypatch, pki, ICU_KAFKA_SECURITY_PROTOCOL=protocol, ICU_KAFKA_SSL_CHECK_HOSTNAME="false")
    credentials = broker_credentials(load_settings(KafkaSettings))
    if expected is None:
        assert credentials is None
        return
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == expected
    assert (auth.get("ssl_context") is not None) == expected.endswith("SSL")
    if auth.get("ssl_context") is not None:
        assert auth["ssl_context"].check_hostname is False


def test_a_wrong_key_passphrase_is_a_start_up_error(monkeypatch, pki):
    _sasl_ssl(monkeypatch, pki, ICU_KAFKA_SSL_CERTFILE=str(pki["cert"]), ICU_KAFKA_SSL_KEYFILE=str(pki["key"]),
              ICU_KAFKA_SSL_PASSWORD="wrong")  # fmt: skip
    with pytest.raises(ssl.SSLError):
        load_settings(KafkaSettings).kafka_ssl_context()


def test_secrets_are_read_from_files_in_the_secrets_dir(monkeypatch, pki, tmp_path):
    _sasl_ssl(monkeypatch, pki)
    monkeypatch.delenv("ICU_KAFKA_SASL_PASSWORD")
    (tmp_path / "ICU_KAFKA_SASL_PASSWORD").write_text("from-a-mounted-secret\n")
    (tmp_path / "ICU_DATABASE_URL").write_text("postgresql://icu:pw@db:5432/icu?sslmode=require")
    monkeypatch.setenv("ICU_SECRETS_DIR", str(tmp_path))
    settings = load_settings(KafkaSettings)
    assert settings.kafka_client_config()["sasl_plain_password"] == "from-a-mounted-secret"
    assert "from-a-mounted-secret" not in repr(settings)
    assert load_settings(DatabaseSettings).require_database_url().endswith("sslmode=require")
    # the environment still wins over a file
    monkeypatch.setenv("ICU_KAFKA_SASL_PASSWORD", "from-the-environment")
    assert load_settings(KafkaSettings).kafka_client_config()["sasl_plain_password"] == "from-the-environment"


def test_a_missing_secrets_dir_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("ICU_SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="ICU_SECRETS_DIR"):
        load_settings(KafkaSettings)


def test_database_tls_options_pass_through_the_url(monkeypatch, pki):
    url = f"postgresql://icu:db-password@timescaledb.icu.svc:5432/icu?sslmode=verify-full&sslrootcert={pki['ca']}"
    monkeypatch.setenv("ICU_DATABASE_URL", url)
    settings = load_settings(DatabaseSettings)
    assert settings.require_database_url() == url
    assert "db-password" not in repr(settings)
    from psycopg.conninfo import conninfo_to_dict

    options = conninfo_to_dict(settings.require_database_url())
    assert options["sslmode"] == "verify-full"
    assert options["sslrootcert"] == str(pki["ca"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://icu:db-password@db/icu?sslmode=verify-everything", "sslmode=verify-everything"),
        ("postgresql://icu:db-password@db/icu?sslmode=verify-full&sslrootcert=/no/ca.crt", "no such file /no/ca.crt"),
        ("postgresql://icu:db-password@db/icu?nonsense=1", "not a libpq connection URL"),
    ],
)
def test_bad_database_tls_options_are_named_without_the_password(monkeypatch, url, message):
    monkeypatch.setenv("ICU_DATABASE_URL", url)
    with pytest.raises(ConfigError) as raised:
        load_settings(DatabaseSettings)
    assert "ICU_DATABASE_URL" in str(raised.value)
    assert message in str(raised.value)
    assert "db-password" not in str(raised.value)
