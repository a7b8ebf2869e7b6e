"""Sensors: canary health."""
