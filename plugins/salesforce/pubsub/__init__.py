"""Salesforce Change Data Capture through the Pub/Sub API (gRPC): the wire definitions, the
change-event codec, the simulated org's server, the client stream and its checkpoint.

``eventbus.proto`` is contactsync's own definition of the API's wire format; the ``_pb2``
modules are generated from it and committed (``regenerate.py`` says why).
"""

from plugins.salesforce.pubsub.checkpoint import ReplayCheckpoint
from plugins.salesforce.pubsub.stream import (
    RESYNC,
    ChangeEvent,
    ClientAuth,
    PubSubAuth,
    SalesforceChangeStream,
    StaticAuth,
)

__all__ = [
    "RESYNC",
    "ChangeEvent",
    "ClientAuth",
    "PubSubAuth",
    "ReplayCheckpoint",
    "SalesforceChangeStream",
    "StaticAuth",
]
