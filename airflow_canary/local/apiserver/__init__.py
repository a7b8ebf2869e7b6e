"""The local mesh's Kubernetes-API-compatible server: requests, resources, validation, storage, kubeconfig."""
