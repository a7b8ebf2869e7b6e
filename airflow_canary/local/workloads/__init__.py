"""The local mesh's workload runner: Deployment replicas as local processes, and the image map."""
