"""The local mesh's Istio-like data plane: the routing proxy, its telemetry and Prometheus pod discovery."""
