"""Triggers: the asynchronous canary health analysis loop."""
