"""Precision work: accuracy evaluation (COCO mAP), calibration data, quantization, sensitivity search.

``edgedet.precision.evaluate.evaluate`` is the entry point for COCO mAP; nothing is imported here.
"""
