"""Helpers shared by the test packages, named by what they provide.

env        the secrets test gateways read, Telegram's address, the repository root
leaks      everything gateways said, kept for the session's secret-leak scan (leakscan: its plugin)
upstream   a recording upstream: in the test's loop, on a fixed port, or in a thread
inprocess  config dicts and a `Service` in the test's event loop
process    the gateway as a child process (async `GatewayProcess`, sync `gateway_process`)
rawclient  bytes on a socket exactly as given, and a parser for what comes back
metrics    one sample out of a Prometheus text exposition
state      an injected clock and an upstream that holds requests (replay, rate limit, store)
schemes    a route's verifier built from a config dict
redis      a real redis-server on loopback
tls        certificate chains per test and TLS clients
botapi     a fake Telegram Bot API
spool      spool routes, polling, reading the spool database
"""
