"""Salesforce's REST and Bulk API 2.0 wire protocol for one org, and nothing else.

Retries, back-off, the daily quota's bookkeeping and the mapping of 5xx to connector errors
come from :class:`daemon.sdk.HttpSession`; tokens and the replay after a 401 from
:class:`daemon.kit.tokens.TokenCache`. This module adds what is Salesforce's own:

- OAuth 2.0 at ``{login_url}/services/oauth2/token`` with the client-credentials, refresh-token
  (a rotated one kept in :attr:`ConnectorContext.state`) or JWT-bearer (RS256) grant. The
  answer has no ``expires_in``: a token is used until Salesforce answers 401
  ``INVALID_SESSION_ID``, and then the request is replayed once with a new one. Every call
  goes to the ``instance_url`` the grant names;
- ``Sforce-Limit-Info: api-usage=N/M`` on every answer feeds the daily quota, which stops the
  cycle above ``daily_share`` of the org's allowance; a 403 ``REQUEST_LIMIT_EXCEEDED`` is
  :class:`RateLimited` at once, never retried (Airbyte fails the sync the same way), with
  ``retry_after`` = ``limit_backoff_seconds`` (the allowance is a rolling 24 h, so it recovers
  gradually: look again later rather than at midnight);
- SOQL ``query``/``queryAll`` pages through ``nextRecordsUrl``; sObject Collections update,
  create and upsert (≤ 200 records); Bulk API 2.0 query jobs whose CSV results are read one
  ``Sforce-Locator`` page at a time, and ingest jobs;
- Salesforce's error bodies (JSON arrays of ``{message, errorCode}``) kept verbatim.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Unpack
from urllib.parse import urlsplit

import httpx

from daemon.sdk import (
    AuthFailed,
    ClientSeams,
    Code,
    ConnectorContext,
    ConnectorError,
    DailyQuota,
    MalformedResponse,
    NotSignedIn,
    PlatformClient,
    RateLimited,
    Token,
    TokenCache,
    Unavailable,
    grant_answer,
    int_header,
    json_answer,
    json_body,
    json_or_none,
    pages,
    register_secret,
    text_stream,
)

TOKEN_PATH = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_COLLECTION = 200  # sObject Collections take at most 200 records
# A REST query answers at most 2,000 records a batch (the default and the largest batchSize).
QUERY_BATCH_MAX = 2000
STATE_REFRESH_TOKEN = "salesforce_refresh_token"
JWT_LIFETIME_SECONDS = 180  # simple-salesforce's exp: now + 3 min
TERMINAL_JOB_STATES = frozenset({"JobComplete", "Failed", "Aborted"})


class QueryRefused(ConnectorError):
    """Salesforce refused a SOQL query (``MALFORMED_QUERY``, ``INVALID_FIELD``): in practice
    the instance's ``soql_filter`` or field list is wrong, so it is a config error."""

    code = Code.CONFIG_INVALID


def error_text(body: Any, status: int) -> str:
    """Salesforce's own words: ``ERROR_CODE: message`` for each entry of an error array
    (``errorCode`` at the top level, ``statusCode`` per record), or an OAuth error."""
    entries = body if isinstance(body, list) else [body]
    parts = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        code = entry.get("errorCode") or entry.get("statusCode") or entry.get("error")
        message = entry.get("message") or entry.get("error_description")
        if code or message:
            parts.append(f"{code}: {message}" if code and message else str(code or message))
    return "; ".join(parts) or f"HTTP {status}"


def error_codes(body: Any) -> set[str]:
    """The ``errorCode`` values of an error array."""
    if not isinstance(body, list):
        return set()
    return {str(e.get("errorCode")) for e in body if isinstance(e, Mapping) and e.get("errorCode")}


def parse_limit_info(value: str | None) -> tuple[int, int] | None:
    """``api-usage=18/5000; per-app-api-usage=…`` → ``(18, 5000)``."""
    if not value:
        return None
    for part in value.split(";"):
        key, _, figures = part.strip().partition("=")
        if key.strip().lower() != "api-usage":
            continue
        used, _, limit = figures.partition("/")
        try:
            return int(used), int(limit)
        except ValueError:
            return None
    return None


def default_audience(login_url: str) -> str:
    """The JWT ``aud`` Salesforce expects: its login host (``test`` for sandboxes), even when
    the token is asked of a My Domain host; any other host (a community, a simulator) is its
    own audience."""
    host = (urlsplit(login_url).hostname or "").lower()
    if not host.endswith(".salesforce.com"):
        return login_url.rstrip("/")
    sandbox = host.startswith("test.") or ".sandbox." in host
    return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"


def jwt_assertion(
    private_key_pem: str, *, issuer: str, subject: str, audience: str, now: float
) -> str:
    """An RS256-signed JWT for the JWT-bearer grant (claims as simple-salesforce sends them)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise AuthFailed("private_key is not a PEM RSA private key without a passphrase") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthFailed("private_key must be an RSA key (Salesforce signs JWTs with RS256)")
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": int(now) + JWT_LIFETIME_SECONDS,
    }
    header = json.dumps({"alg": "RS256"}).encode()
    signing_input = f"{b64(header)}.{b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


class SalesforceClient(PlatformClient):
    """One org's REST and Bulk 2.0 APIs over a retrying :class:`HttpSession`."""

    def __init__(
        self,
        *,
        login_url: str,
        context: ConnectorContext,
        auth: str,
        client_id: str,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        username: str | None = None,
        private_key: str | None = None,
        audience: str | None = None,
        api_version: str = "v62.0",
        daily_share: float = 0.8,
        limit_backoff_seconds: float = 3600.0,
        **seams: Unpack[ClientSeams],
    ) -> None:
        super().__init__(secrets=(client_secret, refresh_token, private_key), **seams)
        self.auth = auth
        self.login_url = login_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._username = username
        self._private_key = private_key
        self._audience = audience or default_audience(self.login_url)
        self.version = api_version if api_version.startswith("v") else f"v{api_version}"
        self.limit_backoff_seconds = limit_backoff_seconds
        self.instance_url: str | None = None
        self.org_id: str | None = None  # the Pub/Sub API's ``tenantid`` (change events)
        self.tokens = TokenCache(
            self._grant,
            clock=self.clock,
            refresh_token=refresh_token,
            state=context.state,
            state_key=STATE_REFRESH_TOKEN,
        )
        if auth == "refresh_token" and not self.tokens.refresh_token:
            raise NotSignedIn("Salesforce", context.instance)
        # The allowance is a rolling 24 h: past the share, look again after the back-off
        # (the first answer then says how much is really left), not at midnight.
        self.quota = DailyQuota(
            None,
            stop_at_share=daily_share,
            clock=self.clock,
            resets_at=lambda now: now + timedelta(seconds=limit_backoff_seconds),
            name="salesforce",
        )
        # Token grants do not count against the API allowance: no quota on that session.
        self.login = self.open_session(self.open_pool(self.login_url))
        self.session = self.open_session(
            self.open_pool(),
            quota=self.quota,
            on_response=self._on_response,
            classify=self._classify,
        )

    # --- auth -------------------------------------------------------------------------------

    def _grant(self, refresh_token: str | None) -> Token:
        form: dict[str, str] = {}
        auth: tuple[str, str] | None = None
        if self.auth == "client_credentials":
            form["grant_type"] = "client_credentials"
            auth = (self.client_id, self._client_secret or "")
        elif self.auth == "refresh_token":
            form.update(
                grant_type="refresh_token",
                client_id=self.client_id,
                client_secret=self._client_secret or "",
                refresh_token=refresh_token or "",
            )
        else:
            form.update(
                grant_type=JWT_GRANT,
                assertion=jwt_assertion(
                    self._private_key or "",
                    issuer=self.client_id,
                    subject=self._username or "",
                    audience=self._audience,
                    now=self.clock.now().timestamp(),
                ),
            )
        headers = {}
        if auth is not None:
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            register_secret(basic)
            headers["Authorization"] = f"Basic {basic}"
        response = self.login.post(TOKEN_PATH, data=form, headers=headers, idempotent=True)
        # No expires_in: the session lives until Salesforce answers 401 INVALID_SESSION_ID.
        token, body = grant_answer(
            response, platform="Salesforce", grant=f"{self.auth} grant", error_text=error_text
        )
        instance = body.get("instance_url")
        if not isinstance(instance, str):
            raise MalformedResponse("Salesforce's token answer has no instance_url")
        if urlsplit(instance).scheme not in ("http", "https"):
            raise MalformedResponse(f"instance_url {instance!r} is not a URL")
        self.instance_url = instance.rstrip("/")
        # The identity URL ends ``/id/<org id>/<user id>``.
        identity = body.get("id")
        parts = identity.rstrip("/").split("/") if isinstance(identity, str) else []
        self.org_id = parts[-2] if len(parts) >= 2 and parts[-3:-2] == ["id"] else None
        return token

    # --- limits -----------------------------------------------------------------------------

    def _on_response(self, response: httpx.Response) -> None:
        usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            self.quota.update(*usage)

    def _classify(self, response: httpx.Response) -> ConnectorError | None:
        """A 403 ``REQUEST_LIMIT_EXCEEDED`` stops the cycle; it is never retried."""
        if response.status_code != 403:
            return None
        body = json_or_none(response)
        if "REQUEST_LIMIT_EXCEEDED" not in error_codes(body):
            return None
        # The allowance is spent, whatever the quota believed: no further call until the
        # back-off is over (the quota's period ends then, and the next answer says more).
        spent = self.quota.limit or max(1, self.quota.used)
        self.quota.update(spent, spent)
        return RateLimited(
            f"Salesforce API allowance exhausted: {error_text(body, 403)}",
            retry_after=self.limit_backoff_seconds,
        )

    # --- requests ---------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """``path`` (``/services/data/…`` or ``query``-relative) on the org's instance."""
        self.tokens.get()  # the grant names the instance
        assert self.instance_url is not None
        if not path.startswith("/"):
            path = f"/services/data/{self.version}/{path}"
        return f"{self.instance_url}{path}"

    def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call with the bearer token, replayed once with a new one after a 401."""
        return self.tokens.send(
            self.session, method, self.url(path), idempotent=idempotent, **kwargs
        )

    def json(self, method: str, path: str, *, idempotent: bool | None = None, **kw: Any) -> Any:
        """A call answering JSON; a 4xx body is MalformedResponse with Salesforce's words."""
        response = self.request(method, path, idempotent=idempotent, **kw)
        return json_answer(response, error_text, f"{method} {path.partition('?')[0]}")

    def describe(self, obj: str) -> dict[str, Any]:
        """``sobjects/<obj>/describe``."""
        body = self.json("GET", f"sobjects/{obj}/describe")
        if not isinstance(body, dict) or not isinstance(body.get("fields"), list):
            raise MalformedResponse(f"describe {obj}: no fields[] in the answer")
        return body

    # --- SOQL -------------------------------------------------------------------------------

    def query_page(self, soql: str | None, next_url: str | None, *, all_rows: bool) -> Any:
        """One page: the first of ``soql``, or the one ``next_url`` names."""
        if next_url is not None:
            response = self.request("GET", next_url)
        else:
            endpoint = "queryAll" if all_rows else "query"
            response = self.request("GET", endpoint, params={"q": soql})
        body = json_body(response)
        if response.status_code >= 400:
            message = error_text(body, response.status_code)
            codes = error_codes(body)
            if codes & {"MALFORMED_QUERY", "INVALID_FIELD", "INVALID_TYPE"}:
                raise QueryRefused(f"Salesforce refused the query: {message}")
            raise MalformedResponse(f"query: HTTP {response.status_code}: {message}")
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise MalformedResponse("query: no records[] in the answer")
        return body

    def query(self, soql: str, *, all_rows: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Pages of records for ``soql``, following ``nextRecordsUrl`` to the end."""

        def fetch(next_url: str | None) -> tuple[list[dict[str, Any]], str | None]:
            body = self.query_page(soql, next_url, all_rows=all_rows)
            nxt = body.get("nextRecordsUrl") if not body.get("done", True) else None
            if not body.get("done", True) and not isinstance(nxt, str):
                raise MalformedResponse("query: done is false but there is no nextRecordsUrl")
            return body["records"], nxt

        for records, _ in pages(fetch, cancel=self.session.cancel, asked=QUERY_BATCH_MAX):
            yield records

    def count(self, soql: str) -> int:
        """``totalSize`` of a ``SELECT COUNT() …`` query."""
        body = self.query_page(soql, None, all_rows=False)
        size = body.get("totalSize")
        if not isinstance(size, int):
            raise MalformedResponse("COUNT() query: no totalSize")
        return size

    # --- sObject Collections ----------------------------------------------------------------

    def collection(
        self, method: str, path: str, records: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """One sObject Collections call (≤ 200 records, ``allOrNone`` false): per-record
        results in request order. A 4xx for the whole request is MalformedResponse."""
        if len(records) > MAX_COLLECTION:
            raise ValueError(f"sObject Collections take at most {MAX_COLLECTION} records")
        # Update and upsert land the same state however often they are sent.
        body = self.json(
            method,
            path,
            json={"allOrNone": False, "records": list(records)},
            idempotent=method == "PATCH",
        )
        if not isinstance(body, list) or len(body) != len(records):
            raise MalformedResponse(f"{path}: expected {len(records)} results in a JSON array")
        return body

    # --- Bulk API 2.0 -----------------------------------------------------------------------

    def wait_for_job(self, kind: str, job_id: str, *, poll: float, timeout: float) -> dict:
        """Poll ``jobs/<kind>/<id>`` until it is JobComplete, Failed or Aborted; after
        ``timeout`` seconds, :class:`Unavailable` (the job carries on at Salesforce)."""
        waited = 0.0
        while True:
            info = self.json("GET", f"jobs/{kind}/{job_id}")
            state = info.get("state") if isinstance(info, dict) else None
            if state in TERMINAL_JOB_STATES:
                return info
            if waited >= timeout:
                raise Unavailable(f"Bulk {kind} job {job_id} still {state} after {waited:.0f}s")
            self.clock.sleep(poll, self.session.cancel)
            waited += poll

    def create_query_job(self, soql: str, *, all_rows: bool) -> str:
        """Start a Bulk 2.0 query job; its id."""
        body = self.json(
            "POST",
            "jobs/query",
            json={"operation": "queryAll" if all_rows else "query", "query": soql},
        )
        if not isinstance(body, dict) or not body.get("id"):
            raise MalformedResponse("jobs/query: no job id in the answer")
        return str(body["id"])

    def query_results(
        self, job_id: str, locator: str | None, max_records: int
    ) -> tuple[Iterator[dict[str, str]], str | None]:
        """One page of a query job's CSV results and the next ``Sforce-Locator`` (``None`` at
        the end). The CSV is parsed as it arrives (the answer is streamed), so memory holds a
        chunk, never a page or the whole result; a count that disagrees with
        ``Sforce-NumberOfRecords`` is MalformedResponse at the end. The caller must finish or
        close the iterator, which releases the connection."""
        params: dict[str, Any] = {"maxRecords": max_records}
        if locator:
            params["locator"] = locator
        response = self.request("GET", f"jobs/query/{job_id}/results", params=params, stream=True)
        if response.status_code >= 400:
            body = json_body(response)
            raise MalformedResponse(
                f"bulk results: HTTP {response.status_code}: "
                f"{error_text(body, response.status_code)}"
            )
        nxt = response.headers.get("Sforce-Locator")
        if nxt is None:
            raise MalformedResponse("bulk results: no Sforce-Locator header")
        expected = int_header(response.headers, "Sforce-NumberOfRecords")  # None: unreadable

        def rows() -> Iterator[dict[str, str]]:
            count = 0
            try:
                for row in csv.DictReader(text_stream(response)):
                    count += 1
                    yield row
            except httpx.HTTPError as exc:
                raise Unavailable(f"bulk results: the download broke off: {exc}") from exc
            finally:
                response.close()
            if expected is not None and expected >= 0 and expected != count:
                raise MalformedResponse(
                    f"bulk results: Sforce-NumberOfRecords says {expected}, the CSV has {count}"
                )

        return rows(), None if nxt in ("", "null") else nxt

    def delete_job(self, kind: str, job_id: str) -> None:
        """Remove a finished job (best effort: a failure only leaves it to expire)."""
        with contextlib.suppress(Unavailable, MalformedResponse):
            self.request("DELETE", f"jobs/{kind}/{job_id}")

    def ingest(
        self,
        obj: str,
        operation: str,
        csv_text: str,
        *,
        external_id: str | None,
        poll: float,
        timeout: float,
    ) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
        """Run one Bulk 2.0 ingest job: create, upload, close, wait; the job info and its
        successful and failed result rows."""
        spec: dict[str, Any] = {
            "object": obj,
            "operation": operation,
            "contentType": "CSV",
            "lineEnding": "LF",
        }
        if external_id:
            spec["externalIdFieldName"] = external_id
        job = self.json("POST", "jobs/ingest", json=spec)
        if not isinstance(job, dict) or not job.get("id"):
            raise MalformedResponse("jobs/ingest: no job id in the answer")
        job_id = str(job["id"])
        upload = self.request(
            "PUT",
            f"jobs/ingest/{job_id}/batches",
            content=csv_text.encode(),
            headers={"Content-Type": "text/csv"},
        )
        if upload.status_code >= 400:
            raise MalformedResponse(
                f"bulk upload: HTTP {upload.status_code}: "
                f"{error_text(json_body(upload), upload.status_code)}"
            )
        self.json("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
        info = self.wait_for_job("ingest", job_id, poll=poll, timeout=timeout)
        results = []
        for kind in ("successfulResults", "failedResults"):
            response = self.request("GET", f"jobs/ingest/{job_id}/{kind}/")
            if response.status_code >= 400:
                raise MalformedResponse(f"bulk {kind}: HTTP {response.status_code}")
            results.append(list(csv.DictReader(io.StringIO(response.text))))
        return info, results[0], results[1]


__all__ = [
    "MAX_COLLECTION",
    "QueryRefused",
    "SalesforceClient",
    "error_text",
    "jwt_assertion",
    "parse_limit_info",
]
