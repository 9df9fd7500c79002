"""Modal submissions: the correction modal and the admin's edit-before-approve modal."""

from slack_bolt import App

from bot.listeners.views import correction, review
from bot.runtime import Services


def register(app: App, services: Services) -> None:
    """Attach every view listener."""
    correction.register(app, services)
    review.register(app, services)
