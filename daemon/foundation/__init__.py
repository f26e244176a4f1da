"""The foundation every layer stands on: the clock, the error dictionary and the JSON log.

Nothing here imports another part of contactsync.
"""
