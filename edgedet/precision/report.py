"""Markdown + PNG report of a mixed-precision search (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from edgedet.precision.result import SearchResult, Step

log = logging.getLogger(__name__)


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def plot_steps(result: SearchResult, png: Path) -> Optional[Path]:
    """mAP against the share of conv MACs in INT8, one point per evaluated step; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'edgedet[quantize]'): no plot")
        return None
    trials = [s for s in result.steps if s.phase != "fp32"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    try:
        colours = {"int8": "tab:red", "grow": "tab:blue", "bisect": "tab:purple", "requantize": "tab:green"}
        for phase, colour in colours.items():
            pts = [s for s in trials if s.phase == phase]
            if pts:
                ax.scatter(
                    [100 * s.int8_mac_share for s in pts],
                    [s.map50_95 for s in pts],
                    c=colour,
                    label=phase,
                    s=28,
                    zorder=3,
                )
        ax.plot([100 * s.int8_mac_share for s in trials], [s.map50_95 for s in trials], c="0.75", lw=0.8)
        for s in trials:
            ax.annotate(
                str(s.index),
                (100 * s.int8_mac_share, s.map50_95),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axhline(result.fp32_map50_95, c="k", lw=1, label=f"FP32 {result.fp32_map50_95:.3f}")
        target = result.fp32_map50_95 - result.max_map_drop
        ax.axhline(target, c="k", ls="--", lw=1, label=f"budget {target:.3f}")
        ax.scatter(
            [100 * result.int8_mac_share],
            [result.map50_95],
            s=140,
            facecolors="none",
            edgecolors="orange",
            linewidths=2,
            label="chosen",
            zorder=4,
        )
        ax.set_xlabel("conv MACs in INT8 (%)")
        ax.set_ylabel("mAP@0.5:0.95")
        ax.set_title(f"{Path(result.model).name}: mixed-precision search ({result.method} ranges)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        fig.savefig(str(png))
    finally:
        plt.close(fig)
    return png


def _steps_table(steps: Sequence[Step]) -> List[str]:
    lines = [
        "| step | phase | float layers | conv MACs INT8 | mAP@.5:.95 | mAP@.5 | within budget |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in steps:
        n = "all" if s.phase == "fp32" else str(len(s.float_layers))
        ok = "" if s.phase == "fp32" else ("yes" if s.passed else "no")
        share = _pct(s.int8_mac_share)
        lines.append(f"| {s.index} | {s.phase} | {n} | {share} | {s.map50_95:.4f} | {s.map50:.4f} | {ok} |")
    return lines


def search_markdown(result: SearchResult, plot_name: Optional[str]) -> str:
    drop = result.fp32_map50_95 - result.map50_95
    out = [
        f"# Mixed-precision INT8: {Path(result.model).name}",
        "",
        f"**{result.message}**",
        "",
        f"- calibration: {result.calib_images} images, `{result.method}` ranges, symmetric int8 "
        "(zero point 0), per-channel weights, per-tensor activations, Q/DQ on Conv inputs only",
        f"- evaluation: {result.eval_images or '?'} images; budget: mAP drop <= {result.max_map_drop}",
        f"- search time: {result.seconds:.0f} s, {len(result.steps) - 1} INT8 evaluations",
        f"- Q/DQ model: `{result.qdq_path.name}`; float layers for TensorRT 8.5-10 implicit builds: "
        f"`{result.float_layers_path.name}`",
        "",
        "| model | mAP@0.5:0.95 | mAP@0.5 | conv MACs in INT8 |",
        "| --- | ---: | ---: | ---: |",
        f"| FP32 | {result.fp32_map50_95:.4f} | {result.fp32_map50:.4f} | 0% |",
        f"| INT8 mixed | {result.map50_95:.4f} ({-drop:+.4f}) | {result.map50:.4f} | "
        f"{_pct(result.int8_mac_share)} |",
        "",
    ]
    if plot_name:
        out += [f"![mAP against INT8 share]({plot_name})", ""]
    out += ["## Steps", ""] + _steps_table(result.steps) + [""]
    by_name = {s.name: s for s in result.sensitivities}
    total = sum(s.macs for s in result.sensitivities) or 1
    out += ["## Layers kept in float", ""]
    if result.float_layers:
        out += ["| layer | depthwise | MACs share | sensitivity |", "| --- | --- | ---: | ---: |"]
        chosen = {s.trt_name: s for s in result.sensitivities}
        for name in result.float_layers:
            s = chosen.get(name) or by_name.get(name)
            if s is None:
                out.append(f"| `{name}` | | | |")
            else:
                out.append(
                    f"| `{name}` | {'yes' if s.depthwise else ''} | {_pct(s.macs / total)} | {s.error:.4g} |"
                )
    else:
        out.append("none: every Conv runs in INT8")
    ranked = sorted(result.sensitivities, key=lambda s: s.error, reverse=True)[:15]
    out += [
        "",
        "## Most sensitive layers (output error with only that layer in INT8)",
        "",
        "| layer | depthwise | MACs share | error |",
        "| --- | --- | ---: | ---: |",
    ]
    out += [
        f"| `{s.trt_name}` | {'yes' if s.depthwise else ''} | {_pct(s.macs / total)} | {s.error:.4g} |"
        for s in ranked
    ]
    return "\n".join(out) + "\n"


def write_search_report(result: SearchResult, md_path: Path) -> Tuple[Path, Optional[Path]]:
    png = plot_steps(result, md_path.with_suffix(".png"))
    md_path.write_text(search_markdown(result, png.name if png else None), encoding="utf-8")
    return md_path, png


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column (l or r), default right but the first."""
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
