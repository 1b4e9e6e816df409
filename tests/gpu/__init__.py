"""Tests that need a CUDA GPU and pycuda; they skip with a reason elsewhere (CI has no GPU)."""
