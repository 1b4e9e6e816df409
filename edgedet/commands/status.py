"""`edgedet status`: the running daemon's status snapshot (its /status endpoint) as a table, for ssh."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any, List, Mapping, Optional, Sequence

from edgedet.config import DEFAULT_LISTEN, load_config, parse_listen
from edgedet.errors import EdgedetError

TIMEOUT_S = 5.0


def default_url(config_path: Optional[str]) -> str:
    """The daemon's address from its config file (``http.listen``), else the default one."""
    listen = load_config(config_path).http.listen if config_path else DEFAULT_LISTEN
    address = parse_listen(listen)
    host = address.host
    if host in ("0.0.0.0", "::"):  # listening everywhere: ask over loopback
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    url_host = f"[{host}]" if ":" in host else host
    return f"http://{url_host}:{address.port}"


def fetch_status(url: str, timeout: float = TIMEOUT_S) -> Mapping[str, Any]:
    target = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise EdgedetError(
            f"{target} answered {exc.code}: {exc.read().decode(errors='replace').strip()}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EdgedetError(
            f"cannot reach edgedet at {target}: {reason} (is the daemon running, with http.enabled "
            "and this http.listen address? see --url and --config)"
        ) from exc
    except ValueError as exc:
        raise EdgedetError(f"{target} did not answer with JSON: {exc}") from exc


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.extend("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
    return out


def format_status(doc: Mapping[str, Any]) -> str:
    """The /status document as text: one line for the daemon, a table per cameras and latencies."""
    if "model" not in doc:
        return f"edgedet: {doc.get('phase', 'unknown')}"
    model = doc["model"]
    lines = [
        f"edgedet {doc.get('phase', '?')}, up {_cell(doc.get('uptime_s'), 0)} s; model {model['name']} "
        f"({model['family']}) on {model['backend']} {model['precision']}, "
        f"{model['inference_workers']} inference worker(s); "
        f"{_cell(doc.get('fps_processed_total'))} fps in all",
        "",
    ]
    rows = []
    for c in doc.get("cameras", []):
        problem = c.get("down_reason") or c.get("last_error")
        if c.get("next_retry_in_s") is not None:
            problem = f"{problem} (retry in {c['next_retry_in_s']:.0f} s)"
        rows.append(
            [
                c["name"],
                c["state"],
                _cell(c.get("fps_in")),
                _cell(c.get("fps_processed")),
                _cell(c.get("frames_in")),
                _cell(c.get("frames_processed")),
                _cell(c.get("frames_dropped")),
                _cell(c.get("reconnects")),
                problem or "-",
            ]
        )
    header = [
        "camera",
        "state",
        "fps in",
        "fps out",
        "frames in",
        "processed",
        "dropped",
        "reconnects",
        "problem",
    ]
    lines.extend(table(header, rows))
    lat_rows = [
        [stage, _cell(v["p50_ms"]), _cell(v["p95_ms"]), str(v["samples"])]
        for stage, v in doc.get("latency", {}).items()
        if v is not None
    ]
    if lat_rows:
        lines.append("")
        lines.extend(table(["latency", "p50 ms", "p95 ms", "frames"], lat_rows))
    lines.append("")
    mqtt = doc.get("mqtt", {})
    if mqtt.get("enabled"):
        text = "connected" if mqtt.get("connected") else f"DISCONNECTED ({mqtt.get('last_error') or '?'})"
        lines.append(
            f"MQTT: {text}; outbox {_cell(mqtt.get('outbox_depth'))} ({mqtt.get('outbox_mode') or '-'})"
        )
    else:
        lines.append("MQTT: disabled")
    t = doc.get("telemetry")
    if t:
        watts = None if t.get("power_mw") is None else t["power_mw"] / 1000.0
        lines.append(
            f"telemetry ({t.get('source') or 'no reading yet'}): {_cell(t.get('temp_max_c'))} °C "
            f"({t.get('temp_max_sensor') or '-'}), {_cell(watts, 2)} W, GPU {_cell(t.get('gpu_load_pct'))} %"
        )
    th = doc.get("throttle")
    if th:
        cap = "no cap" if th.get("max_fps") is None else f"max {th['max_fps']:g} fps"
        lines.append(f"thermal throttle: {th['state']}, {cap} ({th.get('reason')})")
    wd = doc.get("watchdog", {})
    lines.append(f"watchdog: {'healthy' if wd.get('healthy') else 'UNHEALTHY'} ({wd.get('reason')})")
    if doc.get("config_error"):
        lines.append(f"config reload rejected (the last good config runs): {doc['config_error']}")
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    url = args.url or default_url(str(args.config) if args.config else None)
    doc = fetch_status(url)
    print(json.dumps(doc, indent=1, sort_keys=True) if args.json else format_status(doc))
    return 0
