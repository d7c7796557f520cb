"""Meta Graph API for customer-file custom audiences: create an audience, add and remove rows in sessions.

Reproduced: the versioned path (`/v25.0/...`, any version accepted), the token as Bearer or `access_token`
parameter, Graph error bodies (`{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`), the
10,000-row cap (error 100), rows whose identifier columns are not SHA-256 hex counted in `num_invalid_entries`
with samples and not added, `num_received` cumulative per session, a finished session refusing more batches, and
the custom_audience throttle (code 80003 with `X-Business-Use-Case-Usage`). The exact wording of Meta's messages
is not documented; the codes are.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets

import httpx

from retention_pipeline.destinations.identity import is_sha256_hex
from retention_pipeline.destinations.sandbox import RecordingSandbox, json_response

HASHED_KEYS = frozenset(
    {"EMAIL", "PHONE", "EMAIL_SHA256", "PHONE_SHA256", "FN", "LN", "FI", "GEN", "DOBY", "DOBM", "DOBD",
     "CT", "ST", "ZIP", "COUNTRY"}
)  # fmt: skip
SCHEMA_KEYS = HASHED_KEYS | {
    "EXTERN_ID", "MADID", "MOBILE_ADVERTISER_ID", "LOOKALIKE_VALUE",
    "DATA_PROCESSING_OPTIONS", "DATA_PROCESSING_OPTIONS_COUNTRY", "DATA_PROCESSING_OPTIONS_STATE",
}  # fmt: skip
# Columns that say who a row is; removal matches a stored member on any of them.
MATCH_KEYS = HASHED_KEYS | {"EXTERN_ID", "MADID", "MOBILE_ADVERTISER_ID"}
CUSTOMER_FILE_SOURCES = ("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED")
MAX_SAMPLES = 100
_VERSION = re.compile(r"^/v\d+\.\d+(?=/)")


class _GraphError(Exception):
    def __init__(
        self, status: int, code: int, message: str, subcode: int | None = None, **extra: object
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.subcode, self.extra = status, code, message, subcode, extra


def _invalid(message: str, subcode: int | None = None) -> _GraphError:
    return _GraphError(400, 100, f"(#100) {message}", subcode)


class MetaSandbox(RecordingSandbox):
    """One ad account with its custom audiences. `access_token=None` accepts any non-empty token.

    Over `requests_per_second` it answers the custom_audience throttle: Graph sends those as HTTP 400 with code
    80003, not as 429 (`throttle_status` changes the status, to exercise clients against either).
    """

    def __init__(
        self,
        *,
        access_token: str | None = None,
        ad_account_id: str = "1234567890",
        requests_per_second: float | None = None,
        max_rows: int = 10_000,
        regain_access_minutes: int = 0,
        throttle_status: int = 400,
    ) -> None:
        super().__init__(requests_per_second)
        self.ad_account_id = ad_account_id.removeprefix("act_")
        self.max_rows = max_rows
        self.regain_access_minutes = regain_access_minutes
        self.throttle_status = throttle_status
        self._access_token = access_token
        self._audience_ids = (str(n) for n in itertools.count(23850000000000001))
        self._audiences: dict[str, dict] = {}
        self._members: dict[str, dict[frozenset, dict[str, str]]] = {}
        self._sessions: dict[tuple[str, int], dict] = {}

    # --- what tests assert on --------------------------------------------------------------------------------

    def create_audience(self, name: str = "sandbox audience") -> str:
        with self._lock:
            return self._new_audience(name, "", "USER_PROVIDED_ONLY")

    def members(self, audience_id: str, key: str = "EMAIL") -> set[str]:
        """The `key` values of the audience's current members (rows without that key are left out)."""
        with self._lock:
            return {row[key] for row in self._members[str(audience_id)].values() if row.get(key)}

    def member_rows(self, audience_id: str) -> list[dict[str, str]]:
        with self._lock:
            return [dict(row) for row in self._members[str(audience_id)].values()]

    def session(self, audience_id: str, session_id: int) -> dict | None:
        """What `GET /{audience_id}/sessions` would say about one upload session."""
        with self._lock:
            found = self._sessions.get((str(audience_id), int(session_id)))
            return dict(found) if found else None

    # --- dispatch --------------------------------------------------------------------------------------------

    def _respond(self, request: httpx.Request) -> httpx.Response:
        path = _VERSION.sub("", request.url.path, count=1)
        try:
            params = _params(request)
            self._authenticate(request, params)
            method = str(params.get("method", request.method)).upper()  # POST with method=DELETE is a DELETE
            if (match := re.fullmatch(r"/act_(\d+)", path)) and method == "GET":
                return json_response(self._account(match[1]))
            if (match := re.fullmatch(r"/act_(\d+)/customaudiences", path)) and method == "POST":
                return json_response({"id": self._create(match[1], params)})
            if (match := re.fullmatch(r"/(\d+)/users", path)) and method in ("POST", "DELETE"):
                return json_response(self._users(match[1], method, params))
            raise _invalid(f"Unsupported {method.lower()} request.", 33)
        except _GraphError as error:
            return _graph_error(error)

    def _rate_limited(self) -> httpx.Response:
        usage = {
            self.ad_account_id: [
                {
                    "type": "custom_audience",
                    "call_count": 100,
                    "total_cputime": 100,
                    "total_time": 100,
                    "estimated_time_to_regain_access": self.regain_access_minutes,
                }
            ]
        }
        error = _GraphError(
            self.throttle_status,
            80003,
            "There have been too many calls to this ad-account. Wait a bit and try again.",
            is_transient=True,
        )
        return _graph_error(error, {"X-Business-Use-Case-Usage": json.dumps(usage)})

    def _authenticate(self, request: httpx.Request, params: dict) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = (
            token.strip() if scheme.lower() in ("bearer", "oauth") else str(params.get("access_token", ""))
        )
        if not token:
            raise _GraphError(401, 104, "An access token is required to request this resource.")
        if self._access_token not in (None, token):
            raise _GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")

    # --- account and audiences -------------------------------------------------------------------------------

    def _account(self, account: str) -> dict:
        if account != self.ad_account_id:
            raise _invalid(f"Object with ID 'act_{account}' does not exist or cannot be loaded.", 33)
        return {"id": f"act_{account}", "account_id": account, "name": "Sandbox ad account"}

    def _new_audience(self, name: str, description: str, source: str) -> str:
        audience_id = next(self._audience_ids)
        self._audiences[audience_id] = {
            "id": audience_id,
            "name": name,
            "description": description,
            "subtype": "CUSTOM",
            "customer_file_source": source,
        }
        self._members[audience_id] = {}
        return audience_id

    def _create(self, account: str, params: dict) -> str:
        self._account(account)
        if not params.get("name"):
            raise _invalid("The parameter name is required")
        if params.get("subtype") != "CUSTOM":
            raise _invalid("subtype must be CUSTOM for a customer-file audience")
        if params.get("customer_file_source") not in CUSTOMER_FILE_SOURCES:
            raise _invalid(f"customer_file_source must be one of {', '.join(CUSTOMER_FILE_SOURCES)}")
        return self._new_audience(
            str(params["name"]), str(params.get("description", "")), params["customer_file_source"]
        )

    # --- membership ------------------------------------------------------------------------------------------

    def _users(self, audience_id: str, method: str, params: dict) -> dict:
        if audience_id not in self._audiences:
            raise _invalid(
                f"Unsupported post request. Object with ID '{audience_id}' does not exist, cannot be loaded "
                "due to missing permissions, or does not support this operation.",
                33,
            )
        schema, rows = _payload(params.get("payload"), self.max_rows)
        session = self._session(audience_id, params.get("session"))
        invalid: dict[str, str] = {}
        valid_rows = []
        for row in rows:
            bad = next(
                (
                    v
                    for k, v in zip(schema, row, strict=True)
                    if k in HASHED_KEYS and v and not is_sha256_hex(v)
                ),
                None,
            )
            if bad is not None:
                if len(invalid) < MAX_SAMPLES:
                    invalid[bad] = "Invalid format: the value is not a SHA-256 hash"
            elif any(v for k, v in zip(schema, row, strict=True) if k in MATCH_KEYS):
                valid_rows.append({k: v for k, v in zip(schema, row, strict=True) if v})
        members = self._members[audience_id]
        for row in valid_rows:
            keys = frozenset((k, v) for k, v in row.items() if k in MATCH_KEYS)
            if method == "POST":
                members[keys] = row
            else:
                for stored in [s for s in members if s & keys]:
                    del members[stored]
        num_invalid = len(rows) - len(valid_rows)
        session["num_received"] += len(rows)
        session["num_invalid_entries"] += num_invalid
        return {
            "audience_id": audience_id,
            "session_id": str(session["session_id"]),
            "num_received": session["num_received"],
            "num_invalid_entries": num_invalid,
            "invalid_entry_samples": invalid,
        }

    def _session(self, audience_id: str, raw: object) -> dict:
        """The upload session for this batch; a request without one gets a fresh single-batch session."""
        if raw is None:
            raw = {"session_id": secrets.randbits(62), "batch_seq": 1, "last_batch_flag": True}
        if not isinstance(raw, dict):
            raise _invalid("session must be an object")
        session_id, batch_seq = raw.get("session_id"), raw.get("batch_seq")
        if isinstance(session_id, bool) or not isinstance(session_id, int) or not 0 < session_id < 2**63:
            raise _invalid("session.session_id must be a positive 64-bit integer")
        if isinstance(batch_seq, bool) or not isinstance(batch_seq, int) or batch_seq < 1:
            raise _invalid("session.batch_seq must be an integer >= 1")
        session = self._sessions.setdefault(
            (audience_id, session_id),
            {
                "session_id": session_id,
                "num_received": 0,
                "num_invalid_entries": 0,
                "batches": 0,
                "stage": "uploading",
            },
        )
        if session["stage"] == "finished":
            raise _GraphError(400, 2650, "The upload session has already finished.", 1870159)
        session["batches"] += 1
        if raw.get("last_batch_flag") is True:
            session["stage"] = "finished"
        return session


def _params(request: httpx.Request) -> dict:
    """Graph parameters from the query string, a form body or a JSON body; nested values may be JSON strings."""
    params: dict = dict(request.url.params)
    content_type = request.headers.get("content-type", "")
    if request.content:
        if "json" in content_type:
            try:
                body = json.loads(request.content)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _invalid("The request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise _invalid("The request body must be a JSON object")
            params.update(body)
        else:
            params.update(httpx.QueryParams(request.content.decode(errors="replace")))
    for key in ("payload", "session"):
        if isinstance(params.get(key), str):
            try:
                params[key] = json.loads(params[key])
            except json.JSONDecodeError:
                raise _invalid(f"Param {key} must be a JSON object") from None
    return params


def _payload(payload: object, max_rows: int) -> tuple[list[str], list[list[str]]]:
    if not isinstance(payload, dict):
        raise _invalid("The parameter payload is required")
    schema, data = payload.get("schema"), payload.get("data")
    single = isinstance(schema, str)
    schema = [schema] if single else schema
    if not isinstance(schema, list) or not schema or not all(k in SCHEMA_KEYS for k in schema):
        raise _invalid("Invalid schema: use one or more of " + ", ".join(sorted(SCHEMA_KEYS)))
    if not isinstance(data, list) or not data:
        raise _invalid("payload.data must be a non-empty array")
    if len(data) > max_rows:
        raise _invalid(f"Too many rows: a request may carry at most {max_rows}, got {len(data)}")
    rows = [[row] if single and not isinstance(row, list) else row for row in data]
    for row in rows:
        if not isinstance(row, list) or len(row) != len(schema) or not all(isinstance(v, str) for v in row):
            raise _invalid("Every payload.data row needs one string per schema key")
    return schema, rows


def _graph_error(error: _GraphError, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "message": error.message,
        "type": "OAuthException",
        "code": error.code,
        "fbtrace_id": secrets.token_urlsafe(12),
    }
    if error.subcode is not None:
        body["error_subcode"] = error.subcode
    body.update(error.extra)
    headers = dict(headers or {})
    if error.status == 401:
        headers["WWW-Authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{error.message}"'
    return json_response({"error": body}, error.status, headers)
