"""How far behind a device is: the age of the oldest durable message still waiting for its PUBACK, in
the publisher's status (stats message, /metrics). Real mosquitto, real SQLite file."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from edgedet.publish.mqtt import MqttPublisher
from tests.support.mqtt_helpers import event, publisher_cfg
from tests.support.waiting import wait_for


def test_oldest_age_grows_while_the_broker_withholds_acks_and_clears_once_acknowledged(
    mosquitto: Any, tmp_path: Path
) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port, keepalive_s=30), "dev1", tmp_path)
    pub.start()
    try:
        wait_for(lambda: pub.connected, 10, "connected")
        assert pub.status().outbox_oldest_age_s is None  # nothing waits
        assert mosquitto.proc is not None
        mosquitto.proc.send_signal(signal.SIGSTOP)  # the broker takes the messages but does not ack
        try:
            accepted_at = time.time()
            assert pub.publish_event(event("cam1", 0))
            time.sleep(1.5)
            assert pub.publish_event(event("cam1", 1))  # a newer message does not make the oldest younger
            age = wait_for(lambda: pub.status().outbox_oldest_age_s, 5, "an age for the waiting messages")
            wait_for(
                lambda: (pub.status().outbox_oldest_age_s or 0) >= 1.5,
                5,
                "the age to count from the first message",
            )
            assert age <= time.time() - accepted_at + 0.1
            assert pub.status_payload()["outbox_oldest_age_s"] is not None  # in the stats message too
        finally:
            mosquitto.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: pub.status().outbox_depth == 0, 10, "PUBACKs to empty the outbox")
        assert pub.status().outbox_oldest_age_s is None
    finally:
        pub.stop(2.0)
