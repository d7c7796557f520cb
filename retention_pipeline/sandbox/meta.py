"""Meta Graph API for customer-file custom audiences: create an audience, add and remove rows in sessions.

Reproduced: the versioned path (`/v25.0/...`, any version accepted), the token as Bearer or `access_token`
parameter, Graph error bodies (`{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`), the
10,000-row cap (error 100), rows whose identifier columns are not SHA-256 hex counted in `num_invalid_entries`
with samples and not added, `num_received` cumulative per session, a finished session refusing more batches, and
the custom_audience throttle (code 80003 with `X-Business-Use-Case-Usage`). The exact wording of Meta's messages
is not documented; the codes are.

Audience objects (Custom Audience reference, https://developers.facebook.com/docs/marketing-api/reference/
custom-audience; Lookalike Audiences guide, https://developers.facebook.com/documentation/ads-commerce/marketing-api/
audiences/guides/lookalike-audiences; field names as in the facebook-business SDK's adobjects/customaudience.py):

- `GET /{audience_id}?fields=…` answers the fields asked for (only `id` without `fields`; an unknown field is
  Graph's error 100). Sizes are computed from the stored members at once, where Meta takes up to 24 hours and
  counts only the people it matched (the sandbox matches everyone). `approximate_count_lower_bound` /
  `_upper_bound`: below `size_floor` (1,000) both are -1 — Meta withholds small sizes (Ads Manager says "below
  1,000"; users report -1 from the API; the reference documents neither the threshold nor the value, so both are
  assumptions). At or above it, the count ±2% rounded outward to two significant figures, which reproduces the
  reference's example (5,000 → 4,900 / 5,100). `delivery_status` is `{200, ready}` at or above the floor and
  `{300, too small}` below it — the codes are our assumption.
- `operation_status` is `{"code": 200, "description": "Normal"}`, or 471 for an audience whose name or description
  contains one of `flagged_words` (`FLAGGED_WORDS` by default): since September 2025 Meta flags audiences that
  suggest health conditions or financial status, lists the offending fields in `fields_violating_integrity_policy`
  and will not deliver to them. The sandbox still creates the audience and records the warning
  (`flagged_names`, `warnings`), so tests can assert our vendor-visible names are neutral. With
  `refuse_flagged_edits=True` it also refuses membership changes on a flagged audience, as Meta does (code 100,
  subcode 1713230, Custom Audience Users reference). Meta's classifier is not published: the word list is ours.
- `POST /act_{id}/customaudiences` with `subtype=LOOKALIKE` needs `origin_audience_id` (an audience of this
  account, with at least `lookalike_min_seed` = 100 members, per the guide) and `lookalike_spec`, a JSON object
  (or JSON string) with `country` (or `location_spec.geo_locations.countries`) and either `type`
  (similarity/reach) or `ratio` (0.01-0.20 in steps of 0.01; `starting_ratio` below it). A too-small seed and a
  duplicate lookalike (same source, country and size) are refused with code 2654, the code Meta uses for
  lookalike creation errors (duplicate: subcode 1713007, as quoted in facebook-php-business-sdk#477); the
  too-small refusal's subcode is not documented, so none is sent. Lookalikes hold no uploaded members (`/users`
  is refused on them) and report -1 until Meta would have populated them.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import secrets
from collections.abc import Callable, Iterable

import httpx

from retention_pipeline.destinations.identity import is_sha256_hex
from retention_pipeline.sandbox.recording import RecordingSandbox, json_response

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
# Words that make Meta's integrity review flag an audience name (health conditions, financial status). Meta's list
# is not published; these follow its examples ("arthritis", "diabetes", "credit score", "high income") and the
# retention vocabulary that would describe a person's finances. Matched case-insensitively anywhere in the text.
FLAGGED_WORDS = (
    "payment", "debt", "credit", "failed", "churn", "health", "medical", "loan", "overdue", "bankrupt",
    "arrears", "unpaid", "income", "diabetes", "arthritis",
)  # fmt: skip
# CustomAudience fields the sandbox can answer (a subset of the SDK's CustomAudience.Field).
READABLE_FIELDS = frozenset(
    {"id", "account_id", "name", "description", "subtype", "customer_file_source", "approximate_count_lower_bound",
     "approximate_count_upper_bound", "operation_status", "delivery_status", "lookalike_spec",
     "lookalike_audience_ids", "origin_audience_id", "fields_violating_integrity_policy", "time_created"}
)  # fmt: skip
LOOKALIKE_TYPES = ("similarity", "reach")
NORMAL = {"code": 200, "description": "Normal"}
FLAGGED = {
    "code": 471,
    "description": "This audience suggests information (such as health or financial status) that Meta's terms do "
    "not allow and is restricted from running ads. Remove that information or choose another audience.",
}


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
        size_floor: int = 1000,
        lookalike_min_seed: int = 100,
        flagged_words: Iterable[str] = FLAGGED_WORDS,
        refuse_flagged_edits: bool = False,
    ) -> None:
        super().__init__(requests_per_second)
        self.ad_account_id = ad_account_id.removeprefix("act_")
        self.max_rows = max_rows
        self.regain_access_minutes = regain_access_minutes
        self.throttle_status = throttle_status
        self.size_floor = size_floor
        self.lookalike_min_seed = lookalike_min_seed
        self.flagged_words = tuple(w.lower() for w in flagged_words)
        self.refuse_flagged_edits = refuse_flagged_edits
        # {"warning": "flagged_name", "audience_id", "name", "fields", "words"} per flagged audience
        self.warnings: list[dict] = []
        self._access_token = access_token
        self._audience_ids = (str(n) for n in itertools.count(23850000000000001))
        self._audiences: dict[str, dict] = {}
        self._members: dict[str, dict[frozenset, dict[str, str]]] = {}
        self._sessions: dict[tuple[str, int], dict] = {}
        self._clock = itertools.count(1767225600)  # time_created: one second apart from 2026-01-01

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

    def audience(self, audience_id: str) -> dict:
        """The stored audience (name, subtype, origin_audience_id, lookalike_spec, operation_status, …)."""
        with self._lock:
            return json.loads(json.dumps(self._audiences[str(audience_id)]))

    def lookalikes(self, origin_audience_id: str | None = None) -> list[dict]:
        """Every LOOKALIKE audience created, or those seeded by `origin_audience_id`, in creation order."""
        with self._lock:
            return [
                self.audience(a["id"])
                for a in self._audiences.values()
                if a["subtype"] == "LOOKALIKE" and origin_audience_id in (None, a.get("origin_audience_id"))
            ]

    @property
    def flagged_names(self) -> list[str]:
        """Names of audiences Meta's integrity review would flag (operation_status 471), in creation order."""
        with self._lock:
            return [w["name"] for w in self.warnings if w["warning"] == "flagged_name"]

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
            if (match := re.fullmatch(r"/(\d+)", path)) and method == "GET":
                return json_response(self._read(match[1], params.get("fields")))
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

    def _new_audience(self, name: str, description: str, source: str | None, **extra: object) -> str:
        audience_id = next(self._audience_ids)
        audience = {
            "id": audience_id,
            "account_id": self.ad_account_id,
            "name": name,
            "description": description,
            "subtype": "CUSTOM",
            "time_created": next(self._clock),
            "lookalike_audience_ids": [],
            **({"customer_file_source": source} if source else {}),
            **extra,
        }
        flagged = {
            field: words
            for field in ("name", "description")
            if (words := [w for w in self.flagged_words if w in str(audience[field]).lower()])
        }
        audience["operation_status"] = dict(FLAGGED if flagged else NORMAL)
        audience["fields_violating_integrity_policy"] = sorted(flagged)
        if flagged:
            self.warnings.append(
                {
                    "warning": "flagged_name",
                    "audience_id": audience_id,
                    "name": name,
                    "fields": sorted(flagged),
                    "words": sorted({w for words in flagged.values() for w in words}),
                }
            )
        self._audiences[audience_id] = audience
        self._members[audience_id] = {}
        return audience_id

    def _create(self, account: str, params: dict) -> str:
        self._account(account)
        if not params.get("name"):
            raise _invalid("The parameter name is required")
        if params.get("subtype") == "LOOKALIKE":
            return self._create_lookalike(params)
        if params.get("subtype") != "CUSTOM":
            raise _invalid("subtype must be CUSTOM for a customer-file audience or LOOKALIKE")
        if params.get("customer_file_source") not in CUSTOMER_FILE_SOURCES:
            raise _invalid(f"customer_file_source must be one of {', '.join(CUSTOMER_FILE_SOURCES)}")
        return self._new_audience(
            str(params["name"]), str(params.get("description", "")), params["customer_file_source"]
        )

    def _create_lookalike(self, params: dict) -> str:
        origin = str(params.get("origin_audience_id") or "")
        if not origin:
            raise _invalid("The parameter origin_audience_id is required")
        seed = self._audiences.get(origin)
        if seed is None:
            raise _invalid(
                f"origin_audience_id: Object with ID '{origin}' does not exist, cannot be loaded due to missing "
                "permissions, or does not belong to this ad account.",
                33,
            )
        spec = _lookalike_spec(params.get("lookalike_spec"))
        if seed["subtype"] == "LOOKALIKE":
            raise _invalid("origin_audience_id: a lookalike audience cannot seed another lookalike")
        if len(self._members[origin]) < self.lookalike_min_seed:
            raise _GraphError(
                400,
                2654,
                "(#2654) Source Audience Is Too Small: the source audience must contain at least "
                f"{self.lookalike_min_seed} people.",
            )
        size = (spec.get("ratio"), spec.get("starting_ratio"), spec.get("type"))
        for other in self._audiences.values():
            theirs = other.get("lookalike_spec") or {}
            if (
                other.get("origin_audience_id") == origin
                and theirs.get("country") == spec.get("country")
                and (theirs.get("ratio"), theirs.get("starting_ratio"), theirs.get("type")) == size
            ):
                raise _GraphError(
                    400,
                    2654,
                    "(#2654) Can't Create a Duplicate Lookalike: a lookalike audience with the same source, "
                    "country and size already exists.",
                    1713007,
                )
        spec["origin"] = [{"id": origin, "name": seed["name"], "type": "custom_audience"}]
        audience_id = self._new_audience(
            str(params["name"]),
            str(params.get("description", "")),
            None,
            subtype="LOOKALIKE",
            origin_audience_id=origin,
            lookalike_spec=spec,
        )
        seed["lookalike_audience_ids"].append(audience_id)
        return audience_id

    def _read(self, audience_id: str, fields: object) -> dict:
        audience = self._audiences.get(audience_id)
        if audience is None:
            raise _invalid(
                f"Unsupported get request. Object with ID '{audience_id}' does not exist, cannot be loaded due to "
                "missing permissions, or does not support this operation.",
                33,
            )
        wanted = [f.strip() for f in str(fields or "id").split(",") if f.strip()]
        unknown = next((f for f in wanted if f not in READABLE_FIELDS), None)
        if unknown is not None:
            raise _invalid(f"Tried accessing nonexisting field ({unknown}) on node type (CustomAudience)")
        size = len(self._members[audience_id])
        lower, upper = _size_range(size, self.size_floor)
        computed = {
            "approximate_count_lower_bound": lower,
            "approximate_count_upper_bound": upper,
            "delivery_status": (
                {"code": 200, "description": "This audience is ready for use."}
                if lower >= 0
                else {
                    "code": 300,
                    "description": "This audience is too small to show its size or deliver ads.",
                }
            ),
        }
        view = {**audience, **computed}
        return {f: view[f] for f in wanted if f in view}

    # --- membership ------------------------------------------------------------------------------------------

    def _users(self, audience_id: str, method: str, params: dict) -> dict:
        if audience_id not in self._audiences:
            raise _invalid(
                f"Unsupported post request. Object with ID '{audience_id}' does not exist, cannot be loaded "
                "due to missing permissions, or does not support this operation.",
                33,
            )
        audience = self._audiences[audience_id]
        if audience["subtype"] == "LOOKALIKE":
            raise _invalid(
                f"Audience {audience_id} is a lookalike: Meta populates it, users cannot be edited", 33
            )
        if self.refuse_flagged_edits and audience["operation_status"]["code"] == 471:
            raise _invalid(
                "Before updating user memberships, resolve the integrity restrictions on this audience.",
                1713230,
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


def _lookalike_spec(raw: object) -> dict:
    """`lookalike_spec` as the guide defines it (a JSON object, sent as a JSON string), normalized."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise _invalid("Param lookalike_spec must be a JSON object") from None
    if not isinstance(raw, dict):
        raise _invalid("The parameter lookalike_spec is required")
    spec = dict(raw)
    country = spec.get("country")
    countries = ((spec.get("location_spec") or {}).get("geo_locations") or {}).get("countries")
    if country is not None:
        if not isinstance(country, str) or not re.fullmatch(r"[A-Za-z]{2}", country):
            raise _invalid("lookalike_spec.country must be a two-letter country code")
        spec["country"] = country.upper()
    elif not (isinstance(countries, list) and countries):
        raise _invalid("lookalike_spec needs country or location_spec.geo_locations.countries")
    if spec.get("type") is None and spec.get("ratio") is None:
        raise _invalid("lookalike_spec needs either type or ratio")
    if spec.get("type") is not None and spec["type"] not in LOOKALIKE_TYPES:
        raise _invalid(f"lookalike_spec.type must be one of {', '.join(LOOKALIKE_TYPES)}")
    for key in ("ratio", "starting_ratio"):
        if spec.get(key) is not None:
            spec[key] = _ratio(spec[key], key)
    if spec.get("starting_ratio") is not None and (
        spec.get("ratio") is None or spec["starting_ratio"] >= spec["ratio"]
    ):
        raise _invalid("lookalike_spec.starting_ratio must be less than ratio")
    return spec


def _ratio(value: object, key: str) -> float:
    try:
        ratio = float(value)  # type: ignore[arg-type]  # strings like "0.01" are what curl users send
    except (TypeError, ValueError):
        raise _invalid(f"lookalike_spec.{key} must be a number") from None
    percent = ratio * 100
    if (
        isinstance(value, bool)
        or not (1 - 1e-9 <= percent <= 20 + 1e-9)
        or abs(percent - round(percent)) > 1e-9
    ):
        raise _invalid(f"lookalike_spec.{key} must be between 0.01 and 0.20 in steps of 0.01")
    return round(ratio, 2)


def _size_range(size: int, floor: int) -> tuple[int, int]:
    """(lower, upper) as Meta shows them: -1 below the floor, else size ±2% rounded outward to 2 significant figures
    (the lower bound never under the floor, which Meta would have hidden)."""
    if size < floor:
        return -1, -1
    return max(_round_sig(size * 0.98, math.floor), floor), _round_sig(size * 1.02, math.ceil)


def _round_sig(value: float, direction: Callable[[float], int]) -> int:
    step = 10 ** max(len(str(int(value))) - 2, 0)
    return int(direction(round(value / step, 9)) * step)


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


def embedded(**settings: object) -> MetaSandbox:
    """The in-process sandbox a run uses when no Meta credentials are set (see transports.py)."""
    return MetaSandbox(**settings)
