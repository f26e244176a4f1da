"""contactsync's export plugin (being built: it registers no hooks yet)."""
