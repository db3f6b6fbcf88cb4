"""The request corridor: snapshot, client IP, the checks in order (pipeline), forwarding."""
