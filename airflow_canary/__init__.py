"""Apache Airflow provider for canary rollouts of machine-learning models on Istio."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("airflow-provider-canary")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow's ProvidersManager (``airflow providers list``)."""
    return {
        "package-name": "airflow-provider-canary",
        "name": "Canary",
        "description": (
            "Canary rollouts of machine-learning models: Istio traffic steps, "
            "statistical health analysis on Prometheus metrics, and instant rollback."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Istio",
                "external-doc-url": "https://istio.io/latest/docs/reference/config/networking/virtual-service/",
                "tags": ["software"],
            },
            {
                "integration-name": "Prometheus",
                "external-doc-url": "https://prometheus.io/docs/prometheus/latest/querying/api/",
                "tags": ["software"],
            },
            {
                "integration-name": "Canary rollout",
                "tags": ["software"],
            },
        ],
        "operators": [
            {
                "integration-name": "Istio",
                "python-modules": [
                    "airflow_canary.operators.traffic",
                    "airflow_canary.operators.deploy",
                ],
            },
            {
                "integration-name": "Prometheus",
                "python-modules": ["airflow_canary.operators.analysis"],
            },
            {
                "integration-name": "Canary rollout",
                "python-modules": [
                    "airflow_canary.rollout.operators",
                    "airflow_canary.rollout.approval",
                ],
            },
        ],
        "sensors": [
            {"integration-name": "Prometheus", "python-modules": ["airflow_canary.sensors.health"]},
            {
                "integration-name": "Canary rollout",
                "python-modules": ["airflow_canary.sensors.shadow"],
            },
        ],
        "triggers": [
            {
                "integration-name": "Prometheus",
                "python-modules": ["airflow_canary.triggers.health"],
            },
            {"integration-name": "Istio", "python-modules": ["airflow_canary.triggers.deploy"]},
            {
                "integration-name": "Canary rollout",
                "python-modules": ["airflow_canary.triggers.shadow"],
            },
        ],
        "config": {
            "canary": {
                "description": "Settings of the canary provider.",
                "options": {
                    "trigger_settle_seconds": {
                        "description": (
                            "Seconds a canary trigger keeps its final event after it started, "
                            "so that the scheduler has processed the deferring worker's exit "
                            "before the task resumes (a stale exit report fails a resumed "
                            "task: apache/airflow#67287, #72716). 0 turns the wait off."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "10",
                        "default": "10",
                    }
                },
            }
        },
        "hooks": [
            {"integration-name": "Istio", "python-modules": ["airflow_canary.hooks.istio"]},
            {
                "integration-name": "Prometheus",
                "python-modules": ["airflow_canary.hooks.prometheus"],
            },
        ],
        "extra-links": [
            "airflow_canary.operators.links.PrometheusLink",
            "airflow_canary.operators.links.DashboardLink",
        ],
        "notifications": ["airflow_canary.notifications.rollout.RolloutNotifier"],
        "asset-uris": [
            {"schemes": ["canary"], "handler": "airflow_canary.assets.canary.sanitize_uri"},
        ],
        "plugins": [
            {
                "name": "canary_rollouts",
                "plugin-class": "airflow_canary.plugins.CanaryRolloutsPlugin",
            },
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_canary.hooks.prometheus.PrometheusHook",
                "hook-name": "Prometheus",
                "connection-type": "prometheus",
                "conn-fields": {
                    "bearer_token": {
                        "label": "Bearer token",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "headers": {
                        "label": "Extra headers",
                        "description": "JSON object of HTTP headers sent with every query",
                        "schema": {"type": ["object", "null"]},
                    },
                    "verify": {
                        "label": "Verify TLS",
                        "description": "true, false, or the path of a CA bundle",
                        "schema": {"type": ["boolean", "string", "null"], "default": True},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 10},
                    },
                    "ui_url": {
                        "label": "Prometheus UI URL",
                        "schema": {"type": ["string", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["extra"],
                    "relabeling": {"schema": "Scheme (http or https)"},
                    "placeholders": {
                        "host": "prometheus.istio-system or http://127.0.0.1:9090",
                        "port": "9090",
                        "schema": "http",
                        "login": "basic auth user (optional)",
                        "password": "basic auth password (optional)",
                    },
                },
            },
        ],
    }
