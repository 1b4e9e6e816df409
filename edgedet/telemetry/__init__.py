"""Power and temperature readings: tegrastats, jtop, NVML, sysfs; throttling policy."""
