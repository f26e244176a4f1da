"""The error dictionary: every code a sync-log row can carry.

Codes are stable, kebab-case strings. Staff look them up (``contactsync errors CODE``), log
aggregation tools alert on them, and tests assert them, so a code is never renamed once
released; add a new one instead. The first four come from Mainstay's own Import Error
Dictionary and keep its spelling (``duplicate-unique-id-crmId`` included).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    """The stable error codes. ``str(Code.X)`` is the code as written to logs."""

    BLANK_REQUIRED_DATA = "blank-required-data-in-record"
    CONTACT_OUT_OF_SYNC = "contact-out-of-sync"
    DUPLICATE_CONTACT = "duplicate-contact"
    DUPLICATE_CRM_ID = "duplicate-unique-id-crmId"
    UNKNOWN_CONTACT_ID = "unknown-contact-id"
    UNSET_NOT_ALLOWED = "unset-not-allowed"
    INVALID_PHONE = "invalid-phone"
    INVALID_EMAIL = "invalid-email"
    INVALID_VALUE = "invalid-value"
    VALUE_TOO_LONG = "value-too-long"
    INVALID_CUSTOM_FIELD_VALUE = "invalid-custom-field-value"
    UNKNOWN_CUSTOM_FIELD = "unknown-custom-field"
    FILE_MALFORMED = "file-malformed"
    CONFIG_INVALID = "config-invalid"
    REMOTE_REJECTED = "remote-rejected"
    REMOTE_AUTH_FAILED = "remote-auth-failed"
    REMOTE_RATE_LIMITED = "remote-rate-limited"
    REMOTE_UNAVAILABLE = "remote-unavailable"
    REMOTE_MALFORMED = "remote-malformed-response"
    MISSING_REMOTE_REQUIRED_FIELD = "missing-remote-required-field"
    DUPLICATE_REMOTE_KEY = "duplicate-remote-key"
    SYNC_CONFLICT = "sync-conflict"
    REMOTE_UNCONFIRMED = "remote-unconfirmed"
    HOST_KEY_REFUSED = "host-key-refused"
    INTERNAL_ERROR = "internal-error"
    UNKNOWN_COLUMN = "unknown-column"
    AMBIGUOUS_MATCH = "ambiguous-match"
    TLS_REFUSED = "tls-refused"
    CONTROL_CHARACTER = "control-character-in-value"
    RECORD_NOT_APPLIED = "record-not-applied"
    API_UNAUTHORIZED = "api-unauthorized"
    API_FORBIDDEN = "api-forbidden"
    API_INVALID_REQUEST = "api-invalid-request"
    API_NOT_FOUND = "api-not-found"
    API_NO_SCHEDULER = "api-no-scheduler"
    API_NOT_READY = "api-not-ready"
    WEB_CSRF_REFUSED = "web-csrf-refused"
    API_BODY_TOO_LARGE = "api-body-too-large"
    WEBHOOK_REFUSED = "webhook-refused"


@dataclass(frozen=True, slots=True)
class Entry:
    """One dictionary entry: what a code means and what staff should do about it."""

    code: Code
    meaning: str
    next_step: str
    effect: str


_ENTRIES: tuple[Entry, ...] = (
    Entry(
        Code.BLANK_REQUIRED_DATA,
        "A new contact needs a first name, a last name and a phone, and the record lacks "
        "at least one of them (or its value was invalid).",
        "Fill in the missing field on the source record; it is picked up on the next sync.",
        "record skipped",
    ),
    Entry(
        Code.CONTACT_OUT_OF_SYNC,
        "The incoming phone equals the contact's previous phone, so applying it would undo "
        "a newer phone change made in the hub.",
        "Update the phone on the source record to the contact's current phone.",
        "phone kept; other fields applied",
    ),
    Entry(
        Code.DUPLICATE_CONTACT,
        "Another contact already has this phone; a phone is unique in the hub.",
        "Find both contacts (contactsync contacts list --search PHONE), then merge or correct "
        "the source record.",
        "record skipped",
    ),
    Entry(
        Code.DUPLICATE_CRM_ID,
        "More than one record in this run or file, or more than one contact, shares this "
        "CRM id; the first record wins.",
        "Remove the duplicate rows from the source, or correct the CRM id.",
        "record skipped",
    ),
    Entry(
        Code.UNKNOWN_CONTACT_ID,
        "The record names a hub id that matches no contact; records with a hub id are never "
        "used to create contacts.",
        "Correct or remove the hub id on the source record.",
        "record skipped",
    ),
    Entry(
        Code.UNSET_NOT_ALLOWED,
        "The value UNSET clears a field, but this field cannot be cleared.",
        "Send a real value, or leave the field blank to keep the current one.",
        "field skipped; other fields applied",
    ),
    Entry(
        Code.INVALID_PHONE,
        "The phone is not a valid number for the configured default region.",
        "Correct the phone on the source record (include the country code for "
        "international numbers).",
        "field skipped; a new contact is skipped",
    ),
    Entry(
        Code.INVALID_EMAIL,
        "The email address is not syntactically valid.",
        "Correct the email on the source record.",
        "field skipped; other fields applied",
    ),
    Entry(
        Code.INVALID_VALUE,
        "The value does not fit the field's type (for example Active must be true or false).",
        "Correct the value on the source record.",
        "field skipped; other fields applied",
    ),
    Entry(
        Code.VALUE_TOO_LONG,
        "The value is longer than the field allows (names: 64 characters).",
        "Shorten the value on the source record.",
        "field skipped; other fields applied",
    ),
    Entry(
        Code.INVALID_CUSTOM_FIELD_VALUE,
        "The value does not fit the custom field's type (number, date or boolean).",
        "Correct the value, or change the custom field's type (contactsync fields list).",
        "field skipped; other fields applied",
    ),
    Entry(
        Code.UNKNOWN_CUSTOM_FIELD,
        "The record or file names a custom field that the hub does not define.",
        "Define it (contactsync fields add NAME --type TYPE) or fix the column name.",
        "column ignored",
    ),
    Entry(
        Code.FILE_MALFORMED,
        "The file cannot be read as the expected CSV: wrong encoding, no header, an unknown "
        "column, or a row with the wrong number of cells.",
        "Fix the file and upload it again; the details name the file, row or column.",
        "file (or row) not imported",
    ),
    Entry(
        Code.CONFIG_INVALID,
        "A configuration file is invalid; the details name the file, the key and the reason.",
        "Fix the file; the last good configuration keeps running meanwhile.",
        "instance keeps its last good config",
    ),
    Entry(
        Code.REMOTE_REJECTED,
        "The platform rejected the record; the message is the platform's own.",
        "Fix the data the platform complains about; the record is retried on later cycles.",
        "record retried, then parked",
    ),
    Entry(
        Code.REMOTE_AUTH_FAILED,
        "The platform refused the credentials.",
        "Check the instance's credentials and the API user's permissions.",
        "cycle stopped",
    ),
    Entry(
        Code.REMOTE_RATE_LIMITED,
        "The platform's rate limit or daily quota was reached.",
        "Nothing; the instance resumes when the quota resets. Lower the schedule if it recurs.",
        "cycle paused",
    ),
    Entry(
        Code.REMOTE_UNAVAILABLE,
        "The platform could not be reached or answered with a server error.",
        "Nothing unless it persists; the cycle is retried.",
        "cycle retried",
    ),
    Entry(
        Code.REMOTE_MALFORMED,
        "The platform sent a response or record that could not be understood.",
        "Report it with the details; the rest of the data keeps syncing.",
        "record or page skipped",
    ),
    Entry(
        Code.MISSING_REMOTE_REQUIRED_FIELD,
        "The platform requires a field to create a record, and the contact has no value for it.",
        "Fill in the field on the contact in the hub.",
        "record not created remotely",
    ),
    Entry(
        Code.DUPLICATE_REMOTE_KEY,
        "The platform keys records on a field (e.g. HubSpot's email) that several hub "
        "contacts share.",
        "Give each contact its own value, or link the records by hand.",
        "record not created remotely",
    ),
    Entry(
        Code.SYNC_CONFLICT,
        "Both sides changed the same field since the last exchange; the instance's conflict "
        "policy chose the winner.",
        "Check the contact if the winning value is wrong.",
        "one side's value kept",
    ),
    Entry(
        Code.REMOTE_UNCONFIRMED,
        "A write the platform accepts now and applies later (a file upload, an import "
        "queued for processing) was not seen by a pull within the instance's confirmation "
        "window.",
        "Check the platform's import queue or its processing log for the file; the contact is "
        "sent again on its next change.",
        "write not confirmed; retried on the next change",
    ),
    Entry(
        Code.HOST_KEY_REFUSED,
        "The SFTP server's host key is not the one configured (unknown or changed); "
        "contactsync never trusts a new key on its own.",
        "Confirm the new key with the server's owner, then put it in the instance's "
        "known_hosts file or host_key_fingerprint.",
        "cycle stopped; nothing sent or read",
    ),
    Entry(
        Code.INTERNAL_ERROR,
        "An unexpected error in contactsync or a plugin.",
        "Report it with the log line; other records and instances carry on.",
        "record or cycle skipped",
    ),
    Entry(
        Code.UNKNOWN_COLUMN,
        "A column of an imported file has a header that names no hub field; the details name "
        "the file and the column, and the message lists the accepted names.",
        "Rename the column to an accepted name, map it (contactsync import --map "
        "'COLUMN=FIELD'), or ignore it on purpose (--map 'COLUMN='). --strict refuses such "
        "files instead.",
        "column ignored; the rest of the file imported",
    ),
    Entry(
        Code.AMBIGUOUS_MATCH,
        "A platform record with no link matches more than one hub contact by the instance's "
        "match keys (match_on); the row names the candidates' ids.",
        "Decide which contact it is: correct the shared email or phone on the wrong one, or "
        "link it by hand (contactsync links), then sync again.",
        "record skipped; nothing linked",
    ),
    Entry(
        Code.TLS_REFUSED,
        "The platform's TLS certificate did not verify: expired, self-signed, issued for "
        "another host name, or replaced by an intercepting proxy. The message says which.",
        "Have the platform's owner fix the certificate, correct the host name in base_url, or "
        "add the issuing CA to the system's trust store (an inspecting proxy's CA, say).",
        "cycle stopped; nothing sent; not retried until the next cycle",
    ),
    Entry(
        Code.CONTROL_CHARACTER,
        "The value holds a control character: NUL or another C0 control, DEL, or a C1 "
        "control (U+0080 to U+009F). Tab, line feed and carriage return are allowed only in "
        "custom text fields. The message names the character, never the value.",
        "Remove the character from the source record (often a copy-paste from another "
        "program, or a broken export); it is picked up on the next sync.",
        "field skipped; the rest of the record applied",
    ),
    Entry(
        Code.RECORD_NOT_APPLIED,
        "Applying this record failed (the database refused it, or the daemon hit an error "
        "while preparing or writing it), so it was set aside and the rest of its page or file "
        "was applied without it. The message names the error class, not the values.",
        "Look at the record on the source (the row names it); correct it there, or report the "
        "error class with the run id. It is read again on the next change or full sync.",
        "record skipped; the rest of the batch applied and the cursor moved on",
    ),
    Entry(
        Code.API_UNAUTHORIZED,
        "An HTTP API request carried no token, a token the hub does not know, or a revoked "
        "one (Authorization: Bearer TOKEN).",
        "Send a current token; an admin makes one with contactsync tokens create NAME --role "
        "ROLE (contactsync tokens list shows which are revoked).",
        "request refused (401); nothing read or written",
    ),
    Entry(
        Code.API_FORBIDDEN,
        "An HTTP API token's role is too low for the route: read views, staff also edits "
        "contacts, admin also manages instances and tokens.",
        "Use a token with the role the route names, or ask an admin for one.",
        "request refused (403); nothing written",
    ),
    Entry(
        Code.API_INVALID_REQUEST,
        "An HTTP API request the API cannot read: a body that is not the documented JSON, an "
        "unknown key, a wrong type, a bad cursor or limit, too many records in a batch. The "
        "message names the place.",
        "Correct the request as /openapi.json describes it; in a batch, only that record is "
        "refused.",
        "request (or batch record) refused (400/422); nothing written",
    ),
    Entry(
        Code.API_NOT_FOUND,
        "An HTTP API request named a contact (by hub id, CRM id or phone), an instance, an "
        "outbox row, an error code or a route that does not exist.",
        "Check the id; GET /api/v1/contacts?search=… finds a contact, GET /api/v1/instances "
        "lists the instances.",
        "request refused (404); nothing written",
    ),
    Entry(
        Code.API_NO_SCHEDULER,
        "POST /api/v1/instances/NAME/sync asked for a cycle now, but this process serves the "
        "API without syncing (contactsync serve), so it has no scheduler to wake.",
        "Send the request to a node running contactsync run with [http] enabled, or run "
        "contactsync sync NAME on a host with the instance's config.",
        "request refused (409); nothing run",
    ),
    Entry(
        Code.API_NOT_READY,
        "GET /readyz found the daemon not ready: the hub did not answer a query, or the "
        "scheduler that runs the cycles is not running. The message says which.",
        "Check the database (contactsync status names it) and the daemon's log; a daemon "
        "that stays unready is restarted by its supervisor.",
        "the node reports not ready (503); a load balancer sends it no traffic",
    ),
    Entry(
        Code.WEB_CSRF_REFUSED,
        "A form of the staff pages was sent without the form token of the session it came "
        "from (or with another one): a page of another site, an old tab from before a "
        "sign-in, or a session that ended.",
        "Reload the page (sign in again if asked) and send the form again; if it was not "
        "you, tell the operator which page you had open.",
        "form refused (403); nothing written",
    ),
    Entry(
        Code.API_BODY_TOO_LARGE,
        "An HTTP API request's body was larger than the API reads (4 MiB), or it came in too "
        "slowly (over 60 seconds from its first byte).",
        "Send fewer records per request (a batch holds at most 1,000), or split the import; "
        "a body that trickles in points at a broken or hostile client.",
        "request refused (413, or 408 for a slow body); nothing read or written",
    ),
    Entry(
        Code.WEBHOOK_REFUSED,
        "A platform's webhook to POST /webhooks/INSTANCE was refused: its signature does not "
        "match the app's secret, its timestamp is older than the platform allows (HubSpot: 5 "
        "minutes), it replays a request already received, it is not the platform's event "
        "format, or the instance takes no webhooks. The row's details name the reason.",
        "Check that the app's client secret in the instance file is the app's current one and "
        "that the registered URL is the one contactsync webhooks INSTANCE prints; a stray "
        "replay or a bad signature from elsewhere needs nothing. The scheduled pull still "
        "catches every change.",
        "request refused (401, or 404 for an unknown instance); nothing pulled for it",
    ),
)

ENTRIES: dict[str, Entry] = {str(e.code): e for e in _ENTRIES}

assert set(ENTRIES) == {str(c) for c in Code}, "every code needs a dictionary entry"


def explain(code: str) -> Entry:
    """Return the entry for ``code``; raise ``KeyError`` for an unknown code."""
    return ENTRIES[code]
