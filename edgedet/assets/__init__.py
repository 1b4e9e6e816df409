"""The bundled demo shipped inside the package: model, clip and configs (paths only; nothing is read here).

The bottom layer: any stage, command or benchmark may default to these files.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEMO_CONFIG = ASSETS_DIR / "demo.yaml"  # the default of run/detect/bench
EXAMPLE_CONFIG = ASSETS_DIR / "edgedet.yaml"  # what install-service copies to /etc/edgedet
DEMO_MODEL = ASSETS_DIR / "yolox_nano.onnx"
DEMO_CLIP = ASSETS_DIR / "demo_street.mp4"
