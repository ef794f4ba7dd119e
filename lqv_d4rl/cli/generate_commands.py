"""CLI verbs: generate."""

COMMANDS = []
