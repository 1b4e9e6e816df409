"""Output decoders per model family (YOLOX, YOLOv5/v7, YOLOv8/11, end-to-end NMS) and NMS."""
