"""Bolt listeners, grouped by Slack surface; each package has ``register(app, services)``."""
