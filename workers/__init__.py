"""Domain code and background jobs: transcripts, training sets, trainers, evaluation.

Nothing here imports Slack's Bolt framework: the Slack process (``bot``) depends on
this package, never the other way round.
"""
