"""DaskExecutor over mutual TLS: a real ``dask scheduler``/``dask worker`` started with
certificates this test generates (a CA, a server/worker certificate and a client one)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airdask import PythonCommand
from airdask.config import Config
from airdask.executors.dask import DaskExecutor
from airdask.executors.dask.connect import DaskConnectError, security_from_config
from airdask.state import TaskInstanceState
from dask_support import ExternalCluster
from executor_support import drain, make_ti
from task_funcs import say

S = TaskInstanceState
TlsCluster = tuple[ExternalCluster, dict[str, Path]]


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: Any, cert: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a certificate for scheduler and workers, and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("airdask test CA"))
        .issuer_name(name("airdask test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "ca", ca_key, ca)
    for cn in ("cluster", "client"):
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(folder / cn, key, cert)
    return {
        "ca": folder / "ca.pem",
        "cert": folder / "cluster.pem",
        "key": folder / "cluster.key",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    folder = tmp_path_factory.mktemp("tls")
    certs = make_certs(folder)
    cluster = ExternalCluster(folder)
    cluster.tls = {"ca": str(certs["ca"]), "cert": str(certs["cert"]), "key": str(certs["key"])}
    try:
        cluster.start_scheduler()
        cluster.start_worker(nthreads=2)
        yield cluster, certs
    finally:
        cluster.stop()


def _tls_config(config: Config, certs: dict[str, Path]) -> Config:
    return config.with_overrides(
        {
            ("dask", "tls_ca"): certs["ca"],
            ("dask", "tls_cert"): certs["client_cert"],
            ("dask", "tls_key"): certs["client_key"],
        }
    )


def test_mutual_tls_from_config(tls_cluster: TlsCluster, config: Config) -> None:
    cluster, certs = tls_cluster
    assert cluster.address.startswith("tls://")
    ex = DaskExecutor(cluster.address, config=_tls_config(config, certs))
    ex.start()
    ex.client.wait_for_workers(1, timeout=60)
    assert ex.security.require_encryption
    argv, py = make_ti("argv"), make_ti("py")
    ex.queue_command(argv, ["bash", "-c", "echo over-tls"])
    ex.queue_command(py, PythonCommand(say, "python over tls"))
    events = drain(ex, [argv.key, py.key])
    assert events[argv.key][0] is S.SUCCESS and events[py.key][0] is S.SUCCESS
    _, lines = ex.get_task_log(argv, 1)
    assert "over-tls" in lines
    ex.end()


def test_passed_security_object(tls_cluster: TlsCluster, config: Config) -> None:
    from distributed import Security

    cluster, certs = tls_cluster
    security = Security(
        tls_ca_file=str(certs["ca"]),
        tls_client_cert=str(certs["client_cert"]),
        tls_client_key=str(certs["client_key"]),
        require_encryption=True,
    )
    ex = DaskExecutor(cluster.address, security=security, config=config)
    ex.start()
    ti = make_ti("t")
    ex.queue_command(ti, ["true"])
    assert drain(ex, [ti.key])[ti.key][0] is S.SUCCESS
    ex.end()


def test_tls_cluster_refuses_a_plain_client(tls_cluster: TlsCluster, config: Config) -> None:
    cluster, _ = tls_cluster
    ex = DaskExecutor(cluster.address, config=config)
    with pytest.raises(DaskConnectError, match="cannot connect to Dask scheduler tls://"):
        ex.start()


def test_partial_tls_config_is_a_clear_error(config: Config, tmp_path: Path) -> None:
    partial = config.with_overrides({("dask", "tls_ca"): tmp_path / "ca.pem"})
    with pytest.raises(DaskConnectError, match="tls_cert, tls_key missing"):
        security_from_config(partial)
