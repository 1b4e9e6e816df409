"""The tegrastats parser on every real recorded line (tests/data/tegrastats/lines.tsv, a copy of
../shared/data/tegrastats/lines.tsv kept in the repo so these tests and the fake tegrastats run on a
fresh clone), plus odd, truncated and empty lines."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from edgedet.telemetry.reading import reading_from_tegrastats, select_total_power
from edgedet.telemetry.tegrastats_parse import (
    CpuCore,
    EngineState,
    MemoryUse,
    PowerRail,
    TegrastatsReading,
    parse_tegrastats,
)

LINES_TSV = Path(__file__).resolve().parent / "data" / "tegrastats" / "lines.tsv"


def load_rows(path: Path = LINES_TSV) -> List[Tuple[str, str, str]]:
    rows = []
    for row in path.read_text(encoding="utf-8").splitlines():
        if row.strip() and not row.startswith("#"):
            device, jetpack, _source, line = row.split("\t")
            rows.append((device, jetpack, line))
    return rows


ROWS = load_rows()


def mem(value: Optional[MemoryUse]) -> MemoryUse:
    assert value is not None
    return value


def cores(spec: str) -> Tuple[CpuCore, ...]:
    """'10@102,off' -> CpuCore tuple (load@MHz)."""
    out = []
    for item in spec.split(","):
        if item == "off":
            out.append(CpuCore(online=False))
        else:
            load, mhz = item.split("@")
            out.append(CpuCore(True, float(load), float(mhz)))
    return tuple(out)


def check_nano_jp4_idle(r: TegrastatsReading) -> None:
    assert r.timestamp is None
    assert (mem(r.ram).used_mb, mem(r.ram).total_mb, mem(r.ram).lfb_blocks, mem(r.ram).lfb_block_mb) == (
        936,
        3964,
        366,
        4,
    )
    assert (mem(r.swap).used_mb, mem(r.swap).total_mb, mem(r.swap).cached_mb) == (0, 4096, 0)
    assert r.iram is not None and mem(r.iram).total_mb == pytest.approx(252 / 1024)
    assert mem(r.iram).lfb_block_mb == pytest.approx(252 / 1024) and mem(r.iram).used_mb == 0
    assert r.cpus == cores("10@102,3@102,0@102,0@102")
    assert r.emc == EngineState(True, 0.0, 204.0, (204.0,))
    assert r.gpu == EngineState(True, 0.0, 76.0, (76.0,))
    assert r.engines == {"APE": EngineState(True, None, 25.0, (25.0,))}
    assert r.temperatures == {
        "PLL": 24.0,
        "CPU": 27.5,
        "PMIC": 50.0,
        "GPU": 28.0,
        "AO": 29.5,
        "thermal": 28.0,
    }
    assert r.rails == {
        "POM_5V_IN": PowerRail(920, 920),
        "POM_5V_GPU": PowerRail(0, 0),
        "POM_5V_CPU": PowerRail(119, 119),
    }


def check_nano_jp4_busy(r: TegrastatsReading) -> None:
    assert r.gpu is not None and (r.gpu.load_pct, r.gpu.mhz) == (99, 921)
    assert r.emc is not None and (r.emc.load_pct, r.emc.mhz) == (4, 1600)
    assert r.cpus == cores("17@204,0@204,3@204,3@204")
    assert r.rails["POM_5V_IN"] == PowerRail(5143, 2615)
    assert r.rails["POM_5V_GPU"] == PowerRail(2949, 182)
    assert r.rails["POM_5V_CPU"].average_mw == 998
    assert r.temperatures["CPU"] == 28.5 and r.temperatures["AO"] == 30


def check_nano_jp4_cores_off(r: TegrastatsReading) -> None:
    assert (mem(r.swap).used_mb, mem(r.swap).total_mb, mem(r.swap).cached_mb) == (440, 1978, 9)
    assert r.iram is None
    assert r.cpus == cores("28@921,19@921,off,off")
    assert r.cpus[2].load_pct is None and r.cpus[2].mhz is None
    # "EMC_FREQ 0% GR3D_FREQ 0%": a load without a clock
    assert r.emc == EngineState(True, 0.0, None, ())
    assert r.gpu == EngineState(True, 0.0, None, ())
    assert r.temperatures["thermal"] == 41.75 and r.temperatures["GPU"] == 40.5
    assert r.rails == {}


def check_tx2(r: TegrastatsReading) -> None:
    assert r.swap is None and mem(r.ram).lfb_blocks == 1164 and mem(r.ram).total_mb == 7852
    assert r.cpus == cores(",".join(f"{v}@345" for v in (9, 21, 25, 3, 1, 1)))
    assert r.temperatures == {
        "PLL": 42.5,
        "MCPU": 42.5,
        "PMIC": 100.0,
        "Tboard": 40.0,
        "GPU": 41.0,
        "BCPU": 42.5,
        "thermal": 41.9,
        "Tdiode": 41.25,
    }
    assert list(r.rails) == [
        "VDD_SYS_GPU",
        "VDD_SYS_SOC",
        "VDD_4V0_WIFI",
        "VDD_IN",
        "VDD_SYS_CPU",
        "VDD_SYS_DDR",
    ]
    assert r.rails["VDD_IN"] == PowerRail(3140, 3208)
    assert r.rails["VDD_4V0_WIFI"] == PowerRail(633, 527)


def check_agx_xavier(r: TegrastatsReading) -> None:
    assert (mem(r.ram).used_mb, mem(r.ram).lfb_blocks, mem(r.ram).lfb_block_mb) == (14700, 3, 2)
    assert mem(r.swap).cached_mb == 23
    assert r.cpus == cores(",".join(["0@1190"] * 8))
    # JetPack 4 AGX Xavier rails are bare names: "GPU 463/463 CPU 618/618 ..."
    assert r.rails == {
        "GPU": PowerRail(463, 463),
        "CPU": PowerRail(618, 618),
        "SOC": PowerRail(2936, 2936),
        "CV": PowerRail(0, 0),
        "VDDRQ": PowerRail(309, 309),
        "SYS5V": PowerRail(3306, 3306),
    }
    assert r.temperatures["Tdiode"] == 32.0 and r.temperatures["PMIC"] == 100.0


def check_xavier_nx_jp4(r: TegrastatsReading) -> None:
    assert (r.mts_fg_pct, r.mts_bg_pct) == (1, 9)
    assert r.gpu == EngineState(True, 0.0, 1109.0, (1109.0,))
    assert r.emc is not None and (r.emc.load_pct, r.emc.mhz) == (2, 1600)
    assert r.engines["APE"].mhz == 150
    assert [c.load_pct for c in r.cpus] == [47, 23, 32, 22, 31, 96]
    assert mem(r.swap).cached_mb == 280 and mem(r.swap).total_mb == 20269
    assert r.rails["VDD_IN"] == PowerRail(6140, 5510)
    assert r.rails["VDD_CPU_GPU_CV"] == PowerRail(2706, 2119)
    assert r.temperatures["thermal"] == 31.35


def check_xavier_nx_jp512(r: TegrastatsReading) -> None:
    assert r.timestamp == datetime(2024, 7, 9, 13, 31, 31)
    assert [c.mhz for c in r.cpus] == [1397, 1192, 1190, 1190, 1190, 1190]
    assert r.gpu == EngineState(True, 0.0, 114.0, (114.0,))  # "0%@[114]"
    assert r.engines["VIC"] == EngineState(True, None, 115.0, (115.0,))  # "VIC_FREQ 115"
    assert r.rails == {
        "VDD_IN": PowerRail(2763, 2846),
        "VDD_CPU_GPU_CV": PowerRail(650, 670),
        "VDD_SOC": PowerRail(650, 711),
    }
    assert r.temperatures["PMIC"] == 50.0 and r.temperatures["GPU"] == 45.5


def check_xavier_nx_jp51_burn(r: TegrastatsReading) -> None:
    assert r.timestamp == datetime(2025, 10, 1, 20, 6, 6)
    assert mem(r.ram).lfb_blocks == 54 and mem(r.ram).lfb_block_mb == pytest.approx(128 / 1024)  # "54x128kB"
    assert r.cpus == cores("100@1190,99@1190,100@1189,100@1190,off,off")
    assert r.gpu == EngineState(True, 99.0, None, ())
    assert r.rails["VDD_IN"] == PowerRail(9315, 5909)


def check_agx_orin_jp5(r: TegrastatsReading) -> None:
    assert r.timestamp == datetime(2023, 10, 16, 10, 59, 22)
    assert len(r.cpus) == 12 and r.cpus[5].mhz == 730 and r.cpus[2].load_pct == 1
    assert r.gpu == EngineState(True, 0.0, 114.0, (114.0,))
    assert r.engines["GR3D2"] == EngineState(True, 0.0, 114.0, (114.0,))
    assert r.engines["NVJPG1"].mhz == 729 and r.engines["VIC"].mhz == 729 and r.engines["APE"].mhz == 233
    # -256C = offline: None, name kept
    assert r.temperatures["CV0"] is None and r.temperatures["CV1"] is None and r.temperatures["CV2"] is None
    assert r.temperatures["SOC2"] == 40.062 and r.temperatures["GPU"] == 38.156
    # two "NC 0mW/0mW" rails: the second is not lost
    assert r.rails["NC"] == PowerRail(0, 0) and r.rails["NC_2"] == PowerRail(0, 0)
    assert r.rails["VIN_SYS_5V0"] == PowerRail(3842, 3842)
    assert r.rails["VDDQ_VDD2_1V8AO"] == PowerRail(707, 707)


def check_agx_orin_jp6(r: TegrastatsReading) -> None:
    assert r.timestamp == datetime(2025, 7, 21, 16, 33, 42)
    assert r.cpus[0] == CpuCore(True, 7.0, 1728.0)
    assert [c.online for c in r.cpus] == [True] * 8 + [False] * 4
    assert r.gpu == EngineState(True, 39.0, 305.0, (305.0, 0.0))  # "39%@[305,0]"
    assert r.emc is not None and (r.emc.load_pct, r.emc.mhz) == (12, 204)
    for name in ("NVENC", "NVDEC", "NVJPG", "NVJPG1", "VIC", "OFA", "NVDLA0", "NVDLA1", "PVA0"):
        assert r.engines[name] == EngineState(on=False), name
    assert r.engines["APE"].mhz == 174
    assert r.temperatures == {
        "cpu": 43.906,
        "soc2": 40.406,
        "soc0": 41.187,
        "gpu": 40.093,
        "tj": 43.906,
        "soc1": 40.437,
    }
    assert r.rails["VDD_GPU_SOC"] == PowerRail(2798, 2798)


def check_agx_orin_jp7(r: TegrastatsReading) -> None:
    assert r.timestamp == datetime(2026, 7, 25, 9, 8, 28)
    assert r.swap is None and mem(r.ram).used_mb == 20642 and mem(r.ram).lfb_block_mb == 2
    assert r.cpus == cores(",".join(f"{v}@2201" for v in (23, 10, 4, 14, 30, 18, 10, 10, 33, 7, 5, 27)))
    assert r.emc is not None and (r.emc.load_pct, r.emc.mhz) == (3, 3199)
    assert r.gpu == EngineState(True, 12.0, 1300.0, (1300.0, 1300.0))  # "12%@[1300,1300]"
    assert r.engines["NVENC0"] == EngineState(on=False) and r.engines["NVDEC0"] == EngineState(on=False)
    # "cpu@52.968C/52.968C": the first is the temperature, the second kept apart
    assert r.temperatures == {"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}
    assert r.temperatures_second == r.temperatures
    # "NAME cur/avg/max" in mW
    assert r.rails == {
        "VDD_GPU_SOC": PowerRail(5139, 5139, 5139),
        "VDD_CPU_CV": PowerRail(3268, 3268, 3268),
        "VIN_SYS_5V0": PowerRail(5500, 5500, 5500),
    }


def check_orin_nano(r: TegrastatsReading) -> None:
    assert r.timestamp == datetime(2026, 4, 27, 14, 59, 41)
    assert r.emc is None
    assert r.gpu == EngineState(True, 0.0, None, ())
    assert r.cpus == cores("1@729,0@729,0@729,0@729,0@729,0@729")
    assert r.temperatures["tj"] == 49.156 and r.temperatures["soc1"] == 49.156
    assert r.rails["VDD_IN"] == PowerRail(4761, 4778)
    assert r.rails["VDD_SOC"] == PowerRail(1428, 1428)


def check_orin_nx(r: TegrastatsReading) -> None:
    assert mem(r.ram).total_mb == 15656 and len(r.cpus) == 8
    assert list(r.temperatures) == ["cv0", "cpu", "soc2", "soc0", "cv1", "gpu", "tj", "soc1", "cv2"]
    assert r.temperatures["cv2"] == 38.593 and r.temperatures["tj"] == 45.843
    assert r.rails["VDD_IN"] == PowerRail(4304, 4304)


def check_thor(r: TegrastatsReading) -> None:
    assert r.timestamp == datetime(2026, 5, 17, 10, 0, 32)
    assert mem(r.ram).total_mb == 125773 and mem(r.swap).total_mb == 2048
    assert len(r.cpus) == 14 and {c.mhz for c in r.cpus} == {972.0}
    assert [c.load_pct for c in r.cpus][10] == 3
    assert r.emc is not None and (r.emc.load_pct, r.emc.mhz) == (0, 665)
    # "GR3D_FREQ @[0,0,0]": clocks per GPC without a load
    assert r.gpu == EngineState(True, None, 0.0, (0.0, 0.0, 0.0))
    assert r.engines["NVENC1"] == EngineState(True, None, 0.0, (0.0,))  # "NVENC1_FREQ @0"
    assert r.engines["VIC"] == EngineState(on=False) and r.engines["PVA0"] == EngineState(on=False)
    assert r.engines["APE"].mhz == 300
    assert r.temperatures == {"cpu": 34.468, "tj": 34.5, "soc012": 33.781, "soc345": 34.5}
    assert r.rails == {
        "VDD_GPU": PowerRail(0, 0),
        "VDD_CPU_SOC_MSS": PowerRail(4165, 4165),
        "VIN_SYS_5V0": PowerRail(4126, 4126),
    }


# one expectation per recorded row, in file order; the device column is checked so a reordered or
# extended file fails loudly instead of comparing the wrong lines
EXPECTED: List[Tuple[str, Callable[[TegrastatsReading], None], Tuple[object, object]]] = [
    # device, checks, (total power mW, its source)
    ("Jetson Nano", check_nano_jp4_idle, (920, "POM_5V_IN")),
    ("Jetson Nano", check_nano_jp4_busy, (5143, "POM_5V_IN")),
    ("Jetson Nano", check_nano_jp4_cores_off, (None, None)),
    ("Jetson TX2", check_tx2, (3140, "VDD_IN")),
    ("Jetson AGX Xavier", check_agx_xavier, (463 + 618 + 2936 + 0 + 309 + 3306, "sum")),
    ("Jetson Xavier NX", check_xavier_nx_jp4, (6140, "VDD_IN")),
    ("Jetson Xavier NX", check_xavier_nx_jp512, (2763, "VDD_IN")),
    ("Jetson Xavier NX", check_xavier_nx_jp51_burn, (9315, "VDD_IN")),
    ("Jetson AGX Orin 32GB", check_agx_orin_jp5, (4788 + 798 + 3842 + 707, "sum")),
    ("Jetson AGX Orin 64GB", check_agx_orin_jp6, (2798 + 799 + 3315, "sum")),
    ("Jetson AGX Orin 64GB", check_agx_orin_jp7, (5139 + 3268 + 5500, "sum")),
    ("Jetson Orin Nano", check_orin_nano, (4761, "VDD_IN")),
    ("Jetson Orin NX", check_orin_nx, (4304, "VDD_IN")),
    ("Jetson AGX Thor", check_thor, (0 + 4165 + 4126, "sum")),
]


def test_every_recorded_row_has_an_expectation() -> None:
    assert len(ROWS) == len(EXPECTED)
    for (device, _jp, _line), (prefix, _check, _total) in zip(ROWS, EXPECTED):
        assert device.startswith(prefix), (device, prefix)


@pytest.mark.parametrize("index", range(len(EXPECTED)), ids=[f"{d}|{j}" for d, j, _ in ROWS])
def test_real_line(index: int) -> None:
    _device, _jetpack, line = ROWS[index]
    _prefix, check, (total, source) = EXPECTED[index]
    parsed = parse_tegrastats(line)
    check(parsed)
    # nothing on a real line is left unrecognised, and the line gave something measurable
    assert parsed.raw == {}
    assert not parsed.empty
    reading = reading_from_tegrastats(parsed)
    assert (reading.total_power_mw, reading.total_power_source) == (total, source)
    assert reading.source == "tegrastats"
    assert reading.ram_used_mb == mem(parsed.ram).used_mb
    assert len(reading.cpu_loads_pct) == len(parsed.cpus)
    # offline sensors stay None in the normalised reading too; no sentinel leaks anywhere
    assert all(v is None or v > -100 for v in reading.temperatures.values())


def test_repo_copy_matches_shared(shared_dir: Path) -> None:
    """tests/data keeps a copy for fresh clones; it must stay identical to the shared original."""
    shared = shared_dir / "data" / "tegrastats" / "lines.tsv"
    assert LINES_TSV.read_text(encoding="utf-8") == shared.read_text(encoding="utf-8")


def test_configured_total_rail_wins_and_missing_one_gives_none() -> None:
    line = ROWS[8][2]  # AGX Orin JP5: no input rail
    parsed = parse_tegrastats(line)
    r = reading_from_tegrastats(parsed, total_power_rail="vin_sys_5v0")  # case-insensitive
    assert (r.total_power_mw, r.total_power_source) == (3842, "VIN_SYS_5V0")
    r = reading_from_tegrastats(parsed, total_power_rail="VDD_IN")
    assert (r.total_power_mw, r.total_power_source) == (None, None)
    assert select_total_power({"a": (1.0, 1.0)}, allow_sum=False) == (None, None)


# -- odd input ---------------------------------------------------------------------------------------
def test_empty_and_blank_lines() -> None:
    for text in ("", "   ", "\n"):
        r = parse_tegrastats(text)
        assert r.empty and r.raw == {} and r.timestamp is None and r.rails == {}


def test_unknown_tokens_are_kept_raw_and_the_rest_still_parses() -> None:
    line = (
        "RAM 775/7620MB (lfb 3x4MB) FOO_BAR 12x7 weird !! NEWENG 5 CPU [1%@729,??,off] "
        "tj@49.156C VDD_IN 4761mW/4778mW lowercase 5 XYZ@abcC"
    )
    r = parse_tegrastats(line)
    assert r.ram is not None and mem(r.ram).used_mb == 775
    assert r.cpus == (CpuCore(True, 1.0, 729.0), CpuCore(online=True), CpuCore(online=False))
    assert r.temperatures == {"tj": 49.156}
    assert r.rails == {"VDD_IN": PowerRail(4761, 4778)}
    assert r.engines["NEWENG"].mhz == 5  # an engine tegrastats may add one day
    assert r.raw["FOO_BAR"] == "12x7"
    assert r.raw["weird"] == "" and r.raw["!!"] == ""
    assert r.raw["lowercase"] == "5"
    assert "XYZ@abcC" in r.raw


def test_impossible_timestamp_is_kept_raw_not_guessed() -> None:
    r = parse_tegrastats("13-45-2024 25:61:61 RAM 1/2MB (lfb 1x4MB)")
    assert r.timestamp is None and r.raw["timestamp"] == "13-45-2024 25:61:61"
    assert r.ram is not None and mem(r.ram).total_mb == 2


def test_old_cpu_format_with_shared_clock() -> None:
    r = parse_tegrastats("CPU [10%,20%,off,5%]@1224 GR3D 3%@76 EMC 4%@1600")
    assert r.cpus == (
        CpuCore(True, 10.0, 1224.0),
        CpuCore(True, 20.0, 1224.0),
        CpuCore(online=False),
        CpuCore(True, 5.0, 1224.0),
    )
    assert r.gpu is not None and r.gpu.mhz == 76 and r.emc is not None and r.emc.load_pct == 4


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_every_truncation_of_every_real_line_is_survived(index: int) -> None:
    """tegrastats killed mid-write leaves a partial line: any prefix parses without raising, and a
    truncated memory field never turns into a fake power rail."""
    line = ROWS[index][2]
    for end in range(0, len(line) + 1):
        r = parse_tegrastats(line[:end])
        assert "RAM" not in r.rails and "SWAP" not in r.rails and "IRAM" not in r.rails
        for value in r.temperatures.values():
            assert value is None or value > -100


def test_garbage_does_not_crash() -> None:
    samples: Dict[str, str] = {
        "binary": "\x00\xff\x1b[31m RAM\t1/2MB",
        "brackets": "CPU [ GR3D_FREQ @[ ,,] RAM / SWAP ( )",
        "numbers": "1/2/3/4 @@@ %%% 5% @5 -256C @-256C",
        "error": "Error: tegrastats must be run as root",
    }
    for text in samples.values():
        r = parse_tegrastats(text)
        assert isinstance(r, TegrastatsReading)
    assert parse_tegrastats(samples["error"]).empty
