"""Tools around the local mesh: the load generator, the Prometheus launcher and the local stack."""
