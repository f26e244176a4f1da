"""contactsync: a plugin-based, two-way contact sync daemon."""

__version__ = "0.1.0"
