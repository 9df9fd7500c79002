"""Interactive components (block_actions): feedback buttons and admin review buttons."""

from slack_bolt import App

from bot.listeners.actions import feedback, review
from bot.runtime import Services


def register(app: App, services: Services) -> None:
    """Attach every action listener."""
    feedback.register(app, services)
    review.register(app, services)
