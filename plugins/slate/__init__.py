"""contactsync's slate plugin (being built: it registers no hooks yet)."""
