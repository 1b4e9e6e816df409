"""Preprocessing: letterbox + colour order + scaling + HWC->CHW, written into the model's input buffer."""
