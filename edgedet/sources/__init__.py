"""Frame sources (file, V4L2/USB, RTSP, GStreamer, CSI), each read in its own capture thread."""
