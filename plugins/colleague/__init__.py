"""contactsync's colleague plugin (being built: it registers no hooks yet)."""
