"""The hub: what the engagement hub holds and the rules that guard it.

The tables, the database and its schema, the field definitions and the incoming rules,
ingest, the outbox, links, leases, runs and cursors, the sync log, CSV import and messages.
The hub knows nothing of connectors or of the engine that moves records.
"""
