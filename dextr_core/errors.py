"""Errors meant for the people using the tool: each message says what is wrong and what to do."""


class DextrError(Exception):
    """Base class for errors whose message can be shown to a user as it is."""
