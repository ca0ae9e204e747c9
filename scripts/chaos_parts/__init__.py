"""Parts of the chaos suite (scripts/chaos.py): the supervised processes, the emulator
that kills the worker holding the poison entry, and the report."""
