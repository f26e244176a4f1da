"""Configuration: the daemon's settings (``contactsync.toml``), the instance files in ``etc/``
and the secrets they name by reference."""
