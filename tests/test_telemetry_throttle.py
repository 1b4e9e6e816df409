"""Thermal policy: a replayed temperature ramp steps the frame rate down and back up with hysteresis."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import pytest
from pydantic import ValidationError

from edgedet.telemetry.config import ThrottleConfig, ThrottleStep
from edgedet.telemetry.reading import Reading, reading_from_tegrastats
from edgedet.telemetry.tegrastats_parse import parse_tegrastats
from edgedet.telemetry.throttle import ThrottleDecision, ThrottlePolicy
from tests.test_telemetry_parse import ROWS

CFG = ThrottleConfig(
    enabled=True,
    sensor="tj",
    hysteresis_c=3.0,
    steps=[
        ThrottleStep(above_c=70, max_fps=15),
        ThrottleStep(above_c=80, max_fps=10),
        ThrottleStep(above_c=90, max_fps=5),
    ],
)


def reading(temps: Dict[str, Optional[float]]) -> Reading:
    return Reading(source="test", time=0.0, monotonic=0.0, temperatures=temps)


def replay(policy: ThrottlePolicy, ramp: List[float]) -> List[ThrottleDecision]:
    return [policy.update(reading({"tj": t, "cpu": t - 2})) for t in ramp]


def test_ramp_up_and_down_with_hysteresis() -> None:
    ramp = [50, 69.9, 70, 75, 80, 85, 91, 89, 87.5, 86.9, 80, 77.1, 76.9, 70, 67.1, 66.9, 60]
    expected: List[Tuple[Optional[float], str]] = [
        (None, "normal"),  # 50
        (None, "normal"),  # 69.9
        (15, "step1"),  # 70: reached the first threshold
        (15, "step1"),  # 75
        (10, "step2"),  # 80
        (10, "step2"),  # 85
        (5, "step3"),  # 91
        (5, "step3"),  # 89: below 90 but not below 87
        (5, "step3"),  # 87.5
        (10, "step2"),  # 86.9 < 87: one step back up
        (10, "step2"),  # 80
        (10, "step2"),  # 77.1 >= 77
        (15, "step1"),  # 76.9 < 77
        (15, "step1"),  # 70
        (15, "step1"),  # 67.1 >= 67
        (None, "normal"),  # 66.9 < 67: uncapped again
        (None, "normal"),  # 60
    ]
    decisions = replay(ThrottlePolicy(CFG), ramp)
    assert [(d.max_fps, d.state) for d in decisions] == expected
    assert [d.changed for d in decisions] == [
        True, False, True, False, True, False, True, False, False, True, False, False, True, False, False,
        True, False,
    ]  # fmt: skip
    assert decisions[6].reason == "tj 91.0C >= 90C"
    assert decisions[7].reason == "tj 89.0C >= 87C (90C - 3C hysteresis)"
    assert decisions[9].reason == "tj 86.9C >= 80C"
    assert decisions[15].reason == "tj 66.9C < 70C"
    assert decisions[6].temperature_c == 91 and decisions[6].to_payload() == {
        "state": "step3",
        "max_fps": 5,
        "reason": "tj 91.0C >= 90C",
        "temperature_c": 91.0,
    }


def test_jumps_skip_steps_both_ways() -> None:
    policy = ThrottlePolicy(CFG)
    assert [(d.max_fps, d.state) for d in replay(policy, [50, 95, 60])] == [
        (None, "normal"),
        (5, "step3"),
        (None, "normal"),
    ]
    assert [(d.max_fps, d.state) for d in replay(policy, [82, 72])] == [(10, "step2"), (15, "step1")]


def test_missing_sensor_means_no_throttling_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    policy = ThrottlePolicy(CFG)
    assert policy.update(reading({"tj": 95.0})).max_fps == 5
    with caplog.at_level(logging.WARNING, logger="edgedet.telemetry.throttle"):
        d1 = policy.update(reading({"gpu": 95.0}))  # no tj in this reading
        d2 = policy.update(reading({"tj": None}))  # tj offline
        d3 = policy.update(None)  # no reading at all (reader stale/absent)
    assert [(d.max_fps, d.state) for d in (d1, d2, d3)] == [(None, "no-sensor")] * 3
    assert d1.changed and not d2.changed and "missing" in d1.reason and d3.reason == "no telemetry reading"
    missing = [r for r in caplog.records if "not throttling" in r.getMessage()]
    assert len(missing) == 1
    # back: the ramp starts afresh from the current temperature
    d = policy.update(reading({"tj": 72.0}))
    assert (d.max_fps, d.state, d.changed) == (15, "step1", True)


def test_state_payload_follows_the_latest_decision() -> None:
    policy = ThrottlePolicy(CFG)
    assert policy.state_payload() == {
        "state": "normal",
        "max_fps": None,
        "reason": "no reading yet",
        "temperature_c": None,
    }
    policy.update(reading({"tj": 81.0}))
    assert policy.state_payload()["state"] == "step2" and policy.state_payload()["max_fps"] == 10


def test_disabled_policy_never_caps() -> None:
    policy = ThrottlePolicy(ThrottleConfig())
    assert policy.state == "disabled"
    d = policy.update(reading({"tj": 120.0}))
    assert (d.max_fps, d.state) == (None, "disabled")


def test_sensor_names_match_across_readers_and_real_lines() -> None:
    cfg = CFG.model_copy(update={"sensor": "TJ"})
    policy = ThrottlePolicy(cfg)
    assert policy.update(reading({"tj-thermal": 81.0})).state == "step2"  # sysfs naming
    # a real recorded AGX Orin JP6 line: tj@43.906C, far below the first step
    orin = next(line for device, jp, line in ROWS if jp.startswith("JetPack 6 "))
    d = policy.update(reading_from_tegrastats(parse_tegrastats(orin)))
    assert (d.state, d.temperature_c) == ("normal", 43.906)
    # the JetPack 7 Orin line has no tj: a gpu-sensor policy works, a tj policy reports no sensor
    jp7 = next(line for device, jp, line in ROWS if jp.startswith("JetPack 7.2"))
    assert policy.update(reading_from_tegrastats(parse_tegrastats(jp7))).state == "no-sensor"
    gpu_policy = ThrottlePolicy(CFG.model_copy(update={"sensor": "gpu"}))
    assert gpu_policy.update(reading_from_tegrastats(parse_tegrastats(jp7))).temperature_c == 47.625


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="sorted"):
        ThrottleConfig(steps=[ThrottleStep(above_c=80, max_fps=10), ThrottleStep(above_c=70, max_fps=15)])
    with pytest.raises(ValidationError, match="must not rise"):
        ThrottleConfig(steps=[ThrottleStep(above_c=70, max_fps=10), ThrottleStep(above_c=80, max_fps=15)])
    with pytest.raises(ValidationError, match="no steps"):
        ThrottleConfig(enabled=True)
    with pytest.raises(ValidationError):
        ThrottleStep(above_c=70, max_fps=0)
