"""contactsync's sftp plugin (being built: it registers no hooks yet)."""
