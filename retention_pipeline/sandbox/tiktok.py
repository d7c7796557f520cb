"""TikTok API for Business (Marketing API v1.3) for custom audiences: the Segment ("Streaming" / Partner audience)
API plus the reads and the lookalike call the pipeline uses.

Reproduced from `shared/reference/ad-audiences-tiktok-pinterest.md`:
- §1.1: paths under `/open_api/v1.N/` ending with `/` (else HTTP 404; a wrong method is HTTP 405); the token in the
  `Access-Token` header (missing: HTTP 200 + code 40104 with TikTok's observed message, §1.7; wrong: 40105); every
  answer HTTP 200 with `{"code", "message", "request_id", "data"}`.
- §1.3: `POST /segment/audience/` (`action` create / delete), `POST /segment/mapping/` (`advertiser_ids`, `action`
  add / delete, `id_schema`, `batch_data` one row per person, `{}` for an unknown position, each entry
  `{"id", "audience_ids"}`); the whole request succeeds or fails, `data` is empty.
- §1.4: `GET /dmp/custom_audience/get/` (`custom_audience_ids` a JSON array, 1–100) → `data.list[].audience_details`
  with `cover_num`; `GET /dmp/custom_audience/list/` (`page`, `page_size` 1–100) → `data.list` + `page_info`.
- §1.6 / §3.1: rows per mapping request capped at `max_rows` (default 1,000; TikTok documents none) → code 40011;
  over `requests_per_second` → HTTP 200 + code 40100, with no rate-limit headers.
- §1.7: 40000 for an id that is not a lowercase SHA-256 hex digest (raw PII is refused, and the message does not echo
  it), 40002 for other parameter errors, 40007 for an unknown audience, 40106 for another advertiser.
- §1.8: `POST /dmp/custom_audience/lookalike/create/`; a seed below 100 users or a lookalike seed → 40002.

Modelled where TikTok is silent (§3.3): adds and deletes are set operations; a person is the set of ids of one row,
merged with stored persons sharing an id; a delete removes every stored person sharing an id of the row, and a
delete of a non-member is a no-op. `cover_num` is the number of persons, at once (TikTok takes 24–48 h, §1.6), and
`is_valid` says whether it reaches TikTok's 1,000 targeting minimum. TikTok's exact message wording is not
documented except for 40104; the codes are.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from datetime import UTC, datetime

import httpx

from retention_pipeline.destinations.identity import is_sha256_hex
from retention_pipeline.sandbox.recording import RecordingSandbox, json_body, json_response

ID_TYPES = (
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "AAID_SHA256",
    "GAID_SHA256",
    "IDFA_MD5",
    "AAID_MD5",
)
LOOKALIKE_SIZES = ("NARROW", "BALANCED", "BROAD")
LOOKALIKE_KEYS = {
    "source_audience_id",
    "audience_size",
    "include_source",
    "location_ids",
    "mobile_os",
    "placements",
}
TARGETING_MINIMUM = 1000  # matched users before TikTok lets an audience be targeted (§1.6)
NAME_CHARS = 128
NO_TOKEN = "Access token is null, you should set it in http header with key Access-Token."
_PATH = re.compile(r"^/open_api/v1\.\d+(/.*)$")
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
ROUTES = {
    "/segment/audience/": "POST",
    "/segment/mapping/": "POST",
    "/dmp/custom_audience/get/": "GET",
    "/dmp/custom_audience/list/": "GET",
    "/dmp/custom_audience/lookalike/create/": "POST",
}


class _ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _invalid(message: str) -> _ApiError:
    return _ApiError(40002, message)


class TikTokSandbox(RecordingSandbox):
    """One advertiser with its custom audiences. `access_token=None` accepts any non-empty token.

    `audiences` maps each audience id to its record (`audience_id`, `name`, `advertiser_id`, `type`, `persons`: a
    set of frozensets of (id type, hash), `lookalike_spec` for lookalikes); tests read it, or `members`."""

    def __init__(
        self,
        *,
        access_token: str | None = None,
        advertiser_id: str = "7000000000000000001",
        requests_per_second: float | None = None,
        max_rows: int = 1000,
        lookalike_min_seed: int = 100,
    ) -> None:
        super().__init__(requests_per_second)
        self.advertiser_id = str(advertiser_id)
        self.max_rows = max_rows
        self.lookalike_min_seed = lookalike_min_seed
        self._access_token = access_token
        self._ids = (str(n) for n in itertools.count(1780000000000000001))
        self.audiences: dict[str, dict] = {}
        self._index: dict[str, dict[tuple[str, str], frozenset]] = {}  # audience → (id type, hash) → person

    # --- what tests assert on --------------------------------------------------------------------------------

    def create_audience(self, name: str = "sandbox audience") -> str:
        with self._lock:
            return self._new_audience(name, "Partner Audience")

    def members(self, audience_id: str, id_type: str = "EMAIL_SHA256") -> set[str]:
        """The `id_type` hashes of the audience's current members."""
        with self._lock:
            return {
                value for person in self._persons(audience_id) for kind, value in person if kind == id_type
            }

    def persons(self, audience_id: str) -> list[dict[str, str]]:
        """Each member as {id type: hash}, sorted (a person merged from rows with two hashes of one type shows the
        greater; `members` lists them all)."""
        with self._lock:
            return sorted(
                (dict(sorted(person)) for person in self._persons(audience_id)),
                key=lambda person: sorted(person.items()),
            )

    def cover_num(self, audience_id: str) -> int:
        with self._lock:
            return len(self._persons(audience_id))

    def _persons(self, audience_id: str) -> set[frozenset]:
        return self.audiences[str(audience_id)]["persons"]

    # --- dispatch --------------------------------------------------------------------------------------------

    def _respond(self, request: httpx.Request) -> httpx.Response:
        match = _PATH.match(request.url.path)
        route = match[1] if match else None
        if route not in ROUTES:  # includes every path without its trailing slash (§1.1)
            return httpx.Response(404, headers={"Content-Type": "text/plain"}, content=b"404 page not found")
        if request.method != ROUTES[route]:
            return httpx.Response(
                405, headers={"Content-Type": "text/plain"}, content=b"405 method not allowed"
            )
        try:
            self._authenticate(request)
            if route == "/segment/audience/":
                data = self._segment_audience(self._body(request))
            elif route == "/segment/mapping/":
                data = self._mapping(self._body(request))
            elif route == "/dmp/custom_audience/get/":
                data = self._get(request.url.params)
            elif route == "/dmp/custom_audience/list/":
                data = self._list(request.url.params)
            else:
                data = self._lookalike(self._body(request))
        except _ApiError as error:
            return _envelope(error.code, error.message, {})
        return _envelope(0, "OK", data)

    def _rate_limited(self) -> httpx.Response:
        return _envelope(40100, "Too many requests. Please retry in some time.", {})

    def _authenticate(self, request: httpx.Request) -> None:
        token = request.headers.get("access-token", "").strip()
        if not token:
            raise _ApiError(40104, NO_TOKEN)
        if self._access_token not in (None, token):
            raise _ApiError(40105, "The access token is invalid or has been revoked.")

    @staticmethod
    def _body(request: httpx.Request) -> dict:
        try:
            body = json_body(request)
        except ValueError as error:
            raise _invalid(str(error)) from None
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        return body

    def _advertiser(self, value: object) -> None:
        if value is None or value == "":
            raise _invalid("advertiser_id: Missing data for required field.")
        if str(value) != self.advertiser_id:
            raise _ApiError(40106, f"The access token is not valid for advertiser {value}.")

    def _audience(self, audience_id: object) -> dict:
        audience = self.audiences.get(str(audience_id))
        if audience is None or audience["advertiser_id"] != self.advertiser_id:
            raise _ApiError(40007, f"Audience {audience_id} does not exist.")
        return audience

    # --- audiences -------------------------------------------------------------------------------------------

    def _new_audience(self, name: str, kind: str, **extra: object) -> str:
        audience_id = next(self._ids)
        self.audiences[audience_id] = {
            "audience_id": audience_id,
            "name": name,
            "advertiser_id": self.advertiser_id,
            "type": kind,
            "create_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "persons": set(),
            **extra,
        }
        self._index[audience_id] = {}
        return audience_id

    def _segment_audience(self, body: dict) -> dict:
        self._advertiser(body.get("advertiser_id"))
        action = body.get("action")
        if action == "create":
            return {
                "audience_id": self._new_audience(_name(body.get("custom_audience_name")), "Partner Audience")
            }
        if action == "delete":
            audience = self._audience(body.get("delete_audience_id"))
            del self.audiences[audience["audience_id"]], self._index[audience["audience_id"]]
            return {}
        raise _invalid("action: Must be one of: create, delete.")

    def _details(self, audience: dict) -> dict:
        cover = len(audience["persons"])
        return {
            "audience_id": audience["audience_id"],
            "name": audience["name"],
            "type": audience["type"],
            "audience_type": audience["type"],
            "calculate_type": "MULTIPLE_TYPES",
            "cover_num": cover,
            "is_valid": cover >= TARGETING_MINIMUM,
            "is_expiring": False,
            "expired_time": None,
            "create_time": audience["create_time"],
            "is_creator": True,
            "shared": False,
        }

    def _get(self, params: httpx.QueryParams) -> dict:
        self._advertiser(params.get("advertiser_id"))
        ids = _json_list(params.get("custom_audience_ids"), "custom_audience_ids")
        if not 1 <= len(ids) <= 100:
            raise _invalid("custom_audience_ids: Length must be between 1 and 100.")
        return {
            "list": [
                {"audience_details": self._details(self._audience(i)), "audience_history": []} for i in ids
            ]
        }

    def _list(self, params: httpx.QueryParams) -> dict:
        self._advertiser(params.get("advertiser_id"))
        page, size = _int(params.get("page", "1"), "page"), _int(params.get("page_size", "10"), "page_size")
        if page < 1 or not 1 <= size <= 100:
            raise _invalid("page must be >= 1 and page_size between 1 and 100.")
        audiences = [a for a in self.audiences.values() if a["advertiser_id"] == self.advertiser_id]
        total = len(audiences)
        return {
            "list": [self._details(a) for a in audiences[(page - 1) * size : page * size]],
            "page_info": {
                "page": page,
                "page_size": size,
                "total_number": total,
                "total_page": -(-total // size),
            },
        }

    def _lookalike(self, body: dict) -> dict:
        self._advertiser(body.get("advertiser_id"))
        name = _name(body.get("custom_audience_name"))
        spec = body.get("lookalike_spec")
        if not isinstance(spec, dict):
            raise _invalid("lookalike_spec: Missing data for required field.")
        unknown = set(spec) - LOOKALIKE_KEYS
        if unknown:
            raise _invalid(f"lookalike_spec: Unknown field(s) {', '.join(sorted(unknown))}.")
        if "audience_size" in spec and spec["audience_size"] not in LOOKALIKE_SIZES:
            raise _invalid(f"audience_size: Must be one of: {', '.join(LOOKALIKE_SIZES)}.")
        if "location_ids" in spec and (
            not isinstance(spec["location_ids"], list)
            or not all(isinstance(x, str) for x in spec["location_ids"])
        ):
            raise _invalid("location_ids: Must be a list of strings.")
        seed = self._audience(spec.get("source_audience_id"))
        if seed["type"] == "Lookalike Audience":
            raise _invalid("The source audience cannot be a lookalike audience.")
        if len(seed["persons"]) < self.lookalike_min_seed:
            raise _invalid(f"The source audience must have at least {self.lookalike_min_seed} users.")
        return {
            "custom_audience_id": self._new_audience(name, "Lookalike Audience", lookalike_spec=dict(spec))
        }

    # --- membership ------------------------------------------------------------------------------------------

    def _mapping(self, body: dict) -> dict:
        advertisers = body.get("advertiser_ids")
        if not isinstance(advertisers, list) or not advertisers:
            raise _invalid("advertiser_ids: Missing data for required field.")
        for advertiser in advertisers:
            self._advertiser(advertiser)
        action = body.get("action")
        if action not in ("add", "delete"):
            raise _invalid("action: Must be one of: add, delete.")
        schema = body.get("id_schema")
        if (
            not isinstance(schema, list)
            or not schema
            or len(set(map(str, schema))) != len(schema)
            or not all(k in ID_TYPES for k in schema)
        ):
            raise _invalid(f"id_schema: Must be distinct values of: {', '.join(ID_TYPES)}.")
        rows = body.get("batch_data")
        if not isinstance(rows, list) or not rows:
            raise _invalid("batch_data: Missing data for required field.")
        if len(rows) > self.max_rows:
            raise _ApiError(
                40011, f"Too many IDs: at most {self.max_rows} rows per request, got {len(rows)}."
            )
        # All or nothing: the whole batch is checked before anything changes (no per-row result, §1.3).
        changes: dict[str, list[frozenset]] = {}
        for r, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(schema):
                raise _invalid(
                    f"batch_data[{r}]: Must have one entry per id_schema position ({len(schema)})."
                )
            person: dict[str, set] = {}
            for position, entry in enumerate(row):
                if entry == {}:
                    continue
                value, audience_ids = _entry(entry, f"batch_data[{r}][{position}]")
                if not _hashed(schema[position], value):
                    raise _ApiError(
                        40000,
                        f"batch_data[{r}][{position}].id: Invalid value for {schema[position]}: it must be the "
                        "lowercase hex digest of the normalized identifier.",
                    )
                for audience_id in audience_ids:
                    person.setdefault(audience_id, set()).add((schema[position], value))
            if not person:
                raise _invalid(f"batch_data[{r}]: At least one id is required.")
            for audience_id, ids in person.items():
                audience = self._audience(audience_id)
                if audience["type"] == "Lookalike Audience":
                    raise _invalid(
                        f"Audience {audience_id} is a lookalike audience; its members cannot be set."
                    )
                changes.setdefault(audience["audience_id"], []).append(frozenset(ids))
        for audience_id, people in changes.items():
            persons, index = self.audiences[audience_id]["persons"], self._index[audience_id]
            for ids in people:
                touching = {index[i] for i in ids if i in index}
                for person in touching:
                    persons.discard(person)
                    for i in person:
                        del index[i]
                if action == "add":
                    merged = frozenset().union(ids, *touching)
                    persons.add(merged)
                    index.update(dict.fromkeys(merged, merged))
        return {}


def _entry(entry: object, where: str) -> tuple[str, list[str]]:
    if not isinstance(entry, dict):
        raise _invalid(f"{where}: Must be an object ({{}} for an unknown id).")
    value, audience_ids = entry.get("id"), entry.get("audience_ids")
    if not isinstance(value, str) or not value:
        raise _invalid(f"{where}.id: Missing data for required field.")
    if (
        not isinstance(audience_ids, list)
        or not audience_ids
        or not all(isinstance(a, str) for a in audience_ids)
    ):
        raise _invalid(f"{where}.audience_ids: Must be a non-empty list of audience id strings.")
    return value, audience_ids


def _hashed(id_type: str, value: str) -> bool:
    return is_sha256_hex(value) if id_type.endswith("_SHA256") else _MD5_HEX.fullmatch(value) is not None


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("custom_audience_name: Missing data for required field.")
    if len(value) > NAME_CHARS:
        raise _invalid(f"custom_audience_name: Length must be at most {NAME_CHARS}.")
    return value


def _json_list(raw: str | None, field: str) -> list[str]:
    try:
        values = json.loads(raw or "")
    except json.JSONDecodeError:
        raise _invalid(f'{field}: Must be a JSON array, e.g. ["123"].') from None
    if not isinstance(values, list):
        raise _invalid(f'{field}: Must be a JSON array, e.g. ["123"].')
    return [str(v) for v in values]


def _int(raw: str, field: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _invalid(f"{field}: Not a valid integer.") from None


def _envelope(code: int, message: str, data: dict) -> httpx.Response:
    request_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(8).upper()
    return json_response({"code": code, "message": message, "request_id": request_id, "data": data})


def embedded(**settings: object) -> TikTokSandbox:
    """The in-process sandbox a run uses when no TikTok credentials are set (see transports.py)."""
    return TikTokSandbox(**settings)
