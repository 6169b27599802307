"""Multi-model deployment: nginx and systemd assets rendered from one deployment file."""
