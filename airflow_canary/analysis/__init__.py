"""Pure canary analysis: checks become PromQL, samples become verdicts."""
