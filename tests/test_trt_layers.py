"""The float-layer list: both file formats, errors with their line, matching against a network."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedet.backends.tensorrt.layers import load_layer_list, parse_layer_list, resolve_overrides
from edgedet.errors import ConfigError

TEXT = """\
# kept in float by edgedet quantize, budget 0.01 mAP
/backbone/backbone/stem/conv/conv/Conv
/head/cls_preds.0/Conv  fp32   # the class head is sensitive

/head/reg_preds.0/Conv\tFP16
"""


def test_text_format() -> None:
    layers = parse_layer_list(TEXT)
    assert layers == {
        "/backbone/backbone/stem/conv/conv/Conv": None,
        "/head/cls_preds.0/Conv": "fp32",
        "/head/reg_preds.0/Conv": "fp16",
    }


@pytest.mark.parametrize(
    "text",
    [
        '["/a/Conv", "/b/Conv"]',
        '{"layers": ["/a/Conv", {"name": "/b/Conv", "precision": null}]}',
        '{"layers": {"/a/Conv": null, "/b/Conv": null}}',
        '[{"name": "/a/Conv"}, {"name": "/b/Conv"}]',
    ],
)
def test_json_forms(text: str) -> None:
    assert parse_layer_list(text) == {"/a/Conv": None, "/b/Conv": None}


def test_files_by_suffix(tmp_path: Path) -> None:
    txt = tmp_path / "float_layers.txt"
    txt.write_text(TEXT)
    assert len(load_layer_list(txt)) == 3
    js = tmp_path / "float_layers.json"
    js.write_text('{"layers": {"/a/Conv": "fp32"}}')
    assert load_layer_list(js) == {"/a/Conv": "fp32"}
    with pytest.raises(ConfigError, match="cannot read"):
        load_layer_list(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/a/Conv\n/b/Conv int8\n", r":2: precision 'int8'"),
        ("/a/Conv fp32\n/a/Conv fp16\n", r":2: layer '/a/Conv' is listed twice"),
        ('{"layers": ["/a", 3]}', "item 1"),
        ('{"layers": {"/a": "int4"}}', "not one of fp16, fp32"),
        ('{"names": []}', "'layers' key"),
        ("[1, 2", "malformed JSON"),
        ('[""]', "empty layer name"),
    ],
)
def test_errors_name_the_place(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_layer_list(text, "layers.txt")


def test_resolve_against_layer_and_tensor_names() -> None:
    network = [
        ("/stem/Conv", ["/stem/Conv_output_0"]),
        ("/stem/act/Sigmoid", ["/stem/act/Sigmoid_output_0"]),
        ("/head/cls/Conv", ["/head/cls/Conv_output_0"]),
    ]
    overrides = {"/stem/Conv": None, "/head/cls/Conv_output_0": "fp32", "/gone/Conv": "fp16"}
    matched, missing = resolve_overrides(overrides, network, default="fp16")
    assert matched == {0: "fp16", 2: "fp32"}
    assert missing == ["/gone/Conv"]
    matched, _ = resolve_overrides({"/stem/Conv": None}, network, default="fp32")
    assert matched == {0: "fp32"}
    with pytest.raises(ValueError):
        resolve_overrides({}, network, default="int8")
