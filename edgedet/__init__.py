"""edgedet: a real-time object-detection daemon for NVIDIA Jetson (and any Linux box on the CPU)."""

__version__ = "0.1.0"
