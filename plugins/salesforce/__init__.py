"""contactsync's salesforce plugin (being built: it registers no hooks yet)."""
