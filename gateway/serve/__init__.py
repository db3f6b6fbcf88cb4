"""Running the gateway: the service, its admin endpoints, workers and config reloads."""
