"""Running as a service: supervisor, systemd notify/watchdog, signals and reload."""
