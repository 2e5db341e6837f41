"""``stripemeter import``: reading the file, sending it, checkpointing (api/cli_import.py)."""
