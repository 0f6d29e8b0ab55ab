"""Errors that mean "the user asked for something we cannot do": the CLI prints them and exits 2."""


class UserError(Exception):
    """Bad input or configuration; the message names what is wrong and how to fix it."""
