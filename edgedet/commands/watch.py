"""`edgedet watch`: subscribe and pretty-print what edgedet publishes; with --check, the subscriber-side
proof that nothing durable was lost (gaps, duplicates, reordering per camera and message type)."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from edgedet.config import load_config
from edgedet.devtools.watch import durable_message_types, watch
from edgedet.publish.mqtt import resolve_password


def run_watch(args: argparse.Namespace) -> int:
    options: Dict[str, Any] = {"username": args.username, "topic": args.topic}
    host, port, prefix = args.host, args.port, args.prefix
    durable = durable_message_types()  # without --config: the classes durable by default
    if args.config is not None:
        # the daemon's own broker settings: host, port, TLS, user and password (env or credential)
        mqtt = load_config(args.config).mqtt
        host, port, prefix = mqtt.host, mqtt.effective_port, mqtt.topic_prefix
        durable = durable_message_types(mqtt.messages)
        options.update(
            username=mqtt.username, password=resolve_password(mqtt), tls=mqtt.tls, protocol=mqtt.protocol
        )
    if args.share is not None:
        options["share_group"] = args.share
    report = watch(
        host,
        port,
        prefix,
        check=args.check,
        validate=args.validate,
        duration=args.duration,
        max_messages=args.count,
        **options,
    )
    if args.check and report.problems(durable):
        return 1
    return 0
