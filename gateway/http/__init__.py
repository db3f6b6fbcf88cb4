"""The HTTP layer: the public listener, its deadlines and the pooled upstream client. It knows
nothing of routes or config.
"""
