"""`edgedet install-service`: the unit, the user, /etc/edgedet with the example config, and the
bundled demo model and clip in /usr/local/share/edgedet (where the example config points)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from edgedet.assets import ASSETS_DIR, EXAMPLE_CONFIG
from edgedet.service.install import install_service

SHARE = Path("usr/local/share/edgedet")


def run_install_service(args: argparse.Namespace) -> int:
    config_src = args.config or EXAMPLE_CONFIG
    install_service(
        root=args.root, user=args.user, config_src=config_src, dry_run=args.dry_run, enable=args.enable
    )
    share = args.root / SHARE
    for name in ("yolox_nano.onnx", "demo_street.mp4"):
        target = share / name
        if target.exists():
            continue
        if args.dry_run:
            print(f"would copy {ASSETS_DIR / name} -> {target}")
            continue
        share.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ASSETS_DIR / name, target)
        print(f"copied {ASSETS_DIR / name} -> {target}")
    return 0
