"""Admin review of rated answers (approve / reject / edit)."""

from slack_bolt import App

from bot.runtime import Services


def register(app: App, services: Services) -> None:
    """Attach the review listeners (none yet: the learning loop adds them)."""
