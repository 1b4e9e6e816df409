"""A real MqttPublisher in its own process, for tests that kill it (last will, SIGKILL + replay).

Usage: python -m tests.support.mqtt_publisher_proc CFG.json STATE_DIR DEVICE_ID
(EDGEDET_TEST_MAX_PAGES=N caps the outbox file at N pages of 4 KiB: a disk that fills up)
Reads commands on stdin, answers one line starting with ">" each:
  events N [camera]     publish N durable presence events          -> "> last_seq"
  wait committed T      until nothing is waiting to be committed   -> "> ok" | "> timeout"
  wait flushed T        until the outbox is empty (all acked)      -> "> ok" | "> timeout"
  wait connected T / wait disconnected T
  status                                                           -> "> {json}"
  stop T                publisher.stop(T), then exit 0
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from edgedet.publish.config import MqttConfig
from edgedet.publish.mqtt import MqttPublisher
from edgedet.publish.outbox import Outbox
from tests.support.mqtt_helpers import event, wait_for


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    cfg = MqttConfig.model_validate_json(Path(sys.argv[1]).read_text())
    state = Path(sys.argv[2])
    pages = os.environ.get("EDGEDET_TEST_MAX_PAGES")
    outbox = None if not pages else Outbox(cfg.outbox, state / "outbox.sqlite", max_page_count=int(pages))
    pub = MqttPublisher(cfg, sys.argv[3], state, None, outbox=outbox)
    pub.start()
    print("> started", flush=True)
    n_sent = 0
    for raw in sys.stdin:
        parts = raw.split()
        if not parts:
            continue
        cmd = parts[0]
        if cmd == "events":
            camera = parts[2] if len(parts) > 2 else "cam1"
            for _ in range(int(parts[1])):
                n_sent += 1
                pub.publish_event(event(camera, n_sent))
            print(f"> {pub.outbox.numbering.last('events/' + camera)}", flush=True)
        elif cmd == "wait":
            what, t = parts[1], float(parts[2])
            preds = {
                "committed": lambda: pub.outbox.stats().pending == 0,
                "flushed": lambda: pub.outbox.stats().depth == 0,
                "connected": lambda: pub.connected,
                "disconnected": lambda: not pub.connected,
            }
            time.sleep(0.01)
            try:
                wait_for(preds[what], t, what)
            except AssertionError:
                print("> timeout", flush=True)
            else:
                print("> ok", flush=True)
        elif cmd == "status":
            print("> " + json.dumps(pub.status().as_dict()), flush=True)
        elif cmd == "stop":
            pub.stop(float(parts[1]))
            print("> stopped", flush=True)
            return 0
    pub.stop(5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
