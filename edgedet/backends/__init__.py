"""Inference backends: a model in, raw output tensors out. Decoding is not a backend's job."""
