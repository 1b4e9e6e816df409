"""TLS (test CA and certificates made here with openssl) and password auth against a real mosquitto."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

from edgedet.publish.mqtt import MqttPublisher
from tests.support.mqtt_helpers import event, publisher_cfg, subscriber, wait_for

USER, PASSWORD = "edge", "c0rrect-horse"


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(list(args), cwd=str(cwd), check=True, capture_output=True)


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _ca(d: Path, name: str) -> None:
    _run("openssl", "req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.crt",
         "-days", "2", "-subj", f"/CN={name}", cwd=d)  # fmt: skip


def _leaf(d: Path, name: str, ca: str, san: str) -> None:
    _run(
        "openssl", "req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d
    )
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
         "-extfile", f"{name}.ext", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs openssl and mosquitto_passwd (Debian: openssl, mosquitto)")
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")  # a CA that did not sign the broker
    _leaf(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _leaf(d, "client", "ca", "DNS:dev1")
    _run("mosquitto_passwd", "-c", "-b", str(d / "passwd"), USER, PASSWORD, cwd=d)
    for p in d.iterdir():  # mosquitto may run as its own user
        p.chmod(0o644)
    d.chmod(0o755)
    return d


@pytest.fixture
def tls_broker(mosquitto_factory: Any, pki: Path) -> Any:
    return mosquitto_factory(
        allow_anonymous=False,
        extra=[
            f"cafile {pki / 'ca.crt'}",
            f"certfile {pki / 'server.crt'}",
            f"keyfile {pki / 'server.key'}",
            "require_certificate true",
            f"password_file {pki / 'passwd'}",
        ],
    ).start()


def _tls(pki: Path, ca: str = "ca.crt") -> Dict[str, str]:
    return {
        "ca_file": str(pki / ca),
        "cert_file": str(pki / "client.crt"),
        "key_file": str(pki / "client.key"),
    }


def test_tls_client_cert_and_password(tls_broker: Any, pki: Path, tmp_path: Path) -> None:
    cfg = publisher_cfg(tls_broker.port, tls=_tls(pki), username=USER)
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state", PASSWORD)
    sub = subscriber(tls_broker.port, tls=cfg.tls, username=USER, password=PASSWORD)
    pub.start()
    try:
        assert wait_for(lambda: pub.connected), pub.status().last_error
        assert wait_for(lambda: sub.report().status.get("dev1") == "online")
        for i in range(5):
            pub.publish_event(event("cam1", i))
        assert wait_for(lambda: sub.checker.unique_seqs("dev1/cam1/event") == [1, 2, 3, 4, 5])
    finally:
        pub.stop(2.0)
        sub.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_clear_error_retries_and_stays_up(
    tls_broker: Any, pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    cfg = publisher_cfg(tls_broker.port, tls=_tls(pki), username=USER, protocol=protocol)
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state", "wrong")
    with caplog.at_level(logging.ERROR, logger="edgedet.publish.mqtt"):
        pub.start()
        # refused, then retried with backoff (0.2 s, 0.4 s, ... capped at 1 s)
        assert wait_for(lambda: pub.status().connect_failures >= 3, timeout=10)
    try:
        st = pub.status()
        assert not st.connected
        assert "refused the connection" in (st.last_error or "")
        assert any(w in (st.last_error or "") for w in ("Not authorized", "Bad user name or password"))
        assert "check username/password" in caplog.text
        assert pub.publish_event(event("cam1", 1))  # still accepting: kept in the outbox
        assert pub.status().outbox_depth == 1
    finally:
        pub.stop(1.0)


def test_wrong_ca_clear_tls_error_retries_and_stays_up(
    tls_broker: Any, pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = publisher_cfg(tls_broker.port, tls=_tls(pki, ca="other-ca.crt"), username=USER)
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state", PASSWORD)
    with caplog.at_level(logging.ERROR, logger="edgedet.publish.mqtt"):
        pub.start()
        assert wait_for(lambda: pub.status().connect_failures >= 3, timeout=10)
    try:
        st = pub.status()
        assert not st.connected
        assert "TLS handshake failed" in (st.last_error or "") and "CERTIFICATE_VERIFY_FAILED" in (
            st.last_error or ""
        )
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
        assert pub.publish_event(event("cam1", 1))
    finally:
        pub.stop(1.0)
