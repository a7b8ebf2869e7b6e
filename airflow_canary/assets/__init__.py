"""Assets of the provider: the ``canary://`` URIs of promotions and rollbacks."""
