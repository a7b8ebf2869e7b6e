"""Hooks: the Kubernetes API (Istio objects) and Prometheus's HTTP API."""
