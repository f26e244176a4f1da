"""The connector kit: what a platform plugin is built from.

The connector contract, HTTP with retries, tokens, rate limits, paging and cursors, file and
SFTP transports, CSV writing, the exporter base and the simulator kit. Plugins reach all of it
through :mod:`daemon.sdk`; the kit knows nothing of the hub, the engine or the daemon.
"""
