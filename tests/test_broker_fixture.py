import socket

from tests.support.broker import Mosquitto


def test_mosquitto_fixture_accepts_connections(mosquitto: Mosquitto) -> None:
    with socket.create_connection((mosquitto.host, mosquitto.port), timeout=2):
        pass
    mosquitto.stop()
    assert not mosquitto.running
