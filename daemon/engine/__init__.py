"""The sync engine: one cycle of an instance (pull, push, deletes or export), the field
mapping, the plugin registry, the checks and the status read from the hub."""
