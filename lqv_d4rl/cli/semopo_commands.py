"""CLI verbs: semopo."""

COMMANDS = []
