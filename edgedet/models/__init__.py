"""Output decoders per model family (YOLOX, YOLOv5/v7, YOLOv8/11, end-to-end NMS) and NMS.

Entry points: ``edgedet.models.postprocess.build_postprocessor`` / ``input_spec_for`` (what the app calls),
``edgedet.models.detect.detect_family``, ``edgedet.models.detector.ImageDetector`` (one image at a time,
for ``edgedet detect`` and evaluation). Nothing is imported here so that loading the config stays light.
"""
