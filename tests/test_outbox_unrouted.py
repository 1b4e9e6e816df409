"""outbox.unrouted: durable messages the broker acknowledged with "No matching subscribers" (MQTT 5
reason 0x10, which mosquitto answers while nobody subscribes, e.g. after a restart that forgot the
shared subscriptions) are discarded and counted by default, and with ``retry: true`` kept and sent
again until a subscriber arrives. Real mosquitto, real publisher and outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

from edgedet.publish.mqtt import MqttPublisher
from tests.support.mqtt_helpers import event, publisher_cfg, subscriber
from tests.support.waiting import wait_for

RETRY = {"retry": True, "retry_after_s": 0.3, "give_up_after_s": 60}


def _events(sub: Any) -> List[Any]:
    return [m for m in list(sub.messages) if isinstance(m, dict) and m.get("type") == "event"]


def _publish_while_nobody_subscribes(pub: MqttPublisher, n: int) -> None:
    wait_for(lambda: pub.connected, 10, "connected")
    for i in range(n):
        assert pub.publish_event(event("cam1", i))


def test_unrouted_message_is_delivered_to_a_subscriber_that_arrives_later_with_retry(
    mosquitto: Any, tmp_path: Path
) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port, outbox={"unrouted": RETRY}), "dev1", tmp_path / "s")
    pub.start()
    sub = None
    try:
        _publish_while_nobody_subscribes(pub, 3)
        wait_for(lambda: pub.outbox.stats().unrouted_retries >= 1, 10, "a 'No matching subscribers' ack")
        assert pub.outbox.stats().depth == 3  # kept, not deleted
        sub = subscriber(mosquitto.port)
        wait_for(lambda: pub.outbox.stats().depth == 0, 15, "every message taken by the subscriber")
        got = _events(sub)
        seqs = [m["seq"] for m in got]
        assert sorted(set(seqs)) == [1, 2, 3]
        # in order: the first arrival of each seq comes after the first arrival of the one before
        first = [seqs.index(s) for s in (1, 2, 3)]
        assert first == sorted(first)
        assert len({m["id"] for m in got}) == 3  # re-sends carry the same id
        st = pub.outbox.stats()
        assert st.no_subscribers == 0 and st.acked == 3
        assert pub.status().outbox_unrouted_retries == st.unrouted_retries >= 1  # in stats.mqtt
    finally:
        pub.stop(2.0)
        if sub is not None:
            sub.stop()


def test_unrouted_message_is_discarded_and_counted_without_retry(mosquitto: Any, tmp_path: Path) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", tmp_path / "s")
    pub.start()
    sub = None
    try:
        _publish_while_nobody_subscribes(pub, 3)
        wait_for(lambda: pub.outbox.stats().depth == 0, 10, "the PUBACKs")
        sub = subscriber(mosquitto.port)
        assert pub.publish_event(event("cam1", 3))  # a marker: everything before it has been sent
        wait_for(lambda: len(_events(sub)) >= 1, 10, "the marker")
        assert [m["seq"] for m in _events(sub)] == [4]
        st = pub.outbox.stats()
        assert st.no_subscribers == 3 and st.unrouted_retries == 0
    finally:
        pub.stop(2.0)
        if sub is not None:
            sub.stop()


def test_unrouted_message_is_given_up_after_give_up_after_s(mosquitto: Any, tmp_path: Path) -> None:
    unrouted = dict(RETRY, give_up_after_s=0.5)
    pub = MqttPublisher(publisher_cfg(mosquitto.port, outbox={"unrouted": unrouted}), "dev1", tmp_path / "s")
    pub.start()
    try:
        _publish_while_nobody_subscribes(pub, 1)
        wait_for(lambda: pub.outbox.stats().depth == 0, 15, "the message given up")
        st = pub.outbox.stats()
        assert st.no_subscribers == 1 and st.unrouted_retries >= 1
    finally:
        pub.stop(2.0)
