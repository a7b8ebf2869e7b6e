"""Operators: traffic steps, model deployment, health analysis with branching."""
