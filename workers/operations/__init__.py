"""The operator's use cases, called by both the CLI (workers/entrypoints/commands/) and
the console (workers/console/): one job's life, replays, dead-letter retries, the
status at a glance, and the words both show (an age, a failure in one line). Neither
of those rooms imports the other; what they share lives here.

Unlike workers/services/ (the actors' use cases, given their parts), these run in an
operator's process and look their parts up through workers/bootstrap.py."""
