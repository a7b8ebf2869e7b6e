"""Notifiers of the provider."""
