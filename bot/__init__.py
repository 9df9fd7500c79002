"""The Slack side of tuneloop: the Bolt app, its listeners and the Slack-facing jobs.

Only this package imports ``slack_bolt``; it depends on ``workers`` for the domain,
never the reverse.
"""
