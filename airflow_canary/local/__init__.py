"""The local mesh: a Kubernetes-API-compatible server, a process runner and an Istio-like data plane on loopback."""
