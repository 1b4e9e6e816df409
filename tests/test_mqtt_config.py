"""MQTT settings that must be refused before anything connects."""

from __future__ import annotations

import pydantic
import pytest

from edgedet.publish.config import MqttConfig


@pytest.mark.parametrize("prefix", ["edge\x1b[2Jdet", "edge\ndet", "edge\x00", "\x7fedge", "a\tb"])
def test_topic_prefix_with_control_characters_is_refused(prefix: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="topic_prefix"):
        MqttConfig(topic_prefix=prefix)


@pytest.mark.parametrize("prefix", ["edgedet", "site-1/edgedet", "e", "café"])
def test_ordinary_topic_prefixes_are_accepted(prefix: str) -> None:
    assert MqttConfig(topic_prefix=prefix).topic_prefix == prefix


def test_message_topic_with_control_characters_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="topic"):
        MqttConfig.model_validate({"messages": {"stats": {"topic": "stats\x1b"}}})
