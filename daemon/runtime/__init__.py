"""The long-running daemon: the service and its signals, the scheduler, hot reload of
``etc/``, waking the pusher on hub writes, and systemd's notify protocol."""
