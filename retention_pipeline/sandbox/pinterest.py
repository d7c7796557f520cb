"""Pinterest REST API v5 for customer lists and audiences: create a list from records, ADD/REMOVE, read back.

Reproduced from the official OpenAPI description (5.23.0): the `/v5/ad_accounts/{id}/…` paths, the Bearer token
(401 `{"code": 2, "message": "Authentication failed."}`), an unknown ad account (404 code 2 "AdAccount not
found."), a write without the ads:write scope (403 code 3), `records` as ONE comma-separated string (empty entries
ignored, as a trailing comma in the spec's example), `list_type`, the CustomerList counters that grow with every
upload whether or not the record was (or was not) a member, `num_batches`, CUSTOMER_LIST and ACTALIKE audiences,
paginated audience lists (`page_size` ≤ 250, `bookmark`), and the rate limit (429 code 8 with `x-ratelimit-*`
headers, no Retry-After).

Where Pinterest is undocumented or asynchronous, the sandbox chooses, and says so:
- Matching is immediate and every hash "is" a Pinterest account. A list is READY with ≥ 100 members, else
  TOO_SMALL; the real one goes through PROCESSING for hours first. Its audience has the same status, `size` = the
  list's members when READY and null when TOO_SMALL (Pinterest discloses no count below its 100-account floor).
- Records per request are capped (`max_records`, default 10,000, our chosen limit: Pinterest publishes none); over
  it, or an empty `records`, or any record that is not a SHA-256 lowercase hex digest, is 400 code 1 and changes
  nothing. The real API also takes plaintext emails, SHA-1 and MD5; the sandbox refuses them so a raw address
  can never look accepted in a test.
- A customer list gets one CUSTOMER_LIST audience (a second is 400 code 1); an unknown list or audience is 404
  code 2 (Pinterest lists no per-endpoint codes). An ACTALIKE's seeds must be READY audiences of the account.
"""

from __future__ import annotations

import itertools
import re
import time

import httpx

from retention_pipeline.destinations.identity import is_sha256_hex
from retention_pipeline.sandbox.recording import RecordingSandbox, json_body, json_response

LIST_TYPES = ("EMAIL", "IDFA", "MAID", "LR_ID", "DLX_ID", "HASHED_PINNER_ID")
OPERATIONS = ("ADD", "REMOVE")
ACTALIKE_COUNTRIES = ("US", "CA", "GB")
MIN_READY = 100
MAX_PAGE_SIZE = 250
WRITE_SCOPE, READ_SCOPE = "ads:write", "ads:read"
RATE_LIMIT_MESSAGE = (
    "This request exceeded a rate limit. This can happen if the client exceeds one\nof the published rate limits "
    "within a short time window."
)
_ACCOUNT = r"/v5/ad_accounts/(\d+)"


class _PinterestError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> _PinterestError:
    return _PinterestError(400, 1, message)


class PinterestSandbox(RecordingSandbox):
    """One ad account with its customer lists and audiences. `access_token=None` accepts any non-empty token;
    `scopes` are the token's (drop ads:write to exercise the 403)."""

    def __init__(
        self,
        *,
        access_token: str | None = None,
        ad_account_id: str = "549756359984",
        requests_per_second: float | None = None,
        max_records: int = 10_000,
        scopes: tuple[str, ...] = (READ_SCOPE, WRITE_SCOPE),
    ) -> None:
        super().__init__(requests_per_second)
        self.ad_account_id = str(ad_account_id)
        self.max_records = max_records
        self.scopes = tuple(scopes)
        self._access_token = access_token
        self._list_ids = (str(n) for n in itertools.count(643))
        self._audience_ids = (str(n) for n in itertools.count(2542620639259))
        self._lists: dict[str, dict] = {}
        self._members: dict[str, set[str]] = {}
        self._audiences: dict[str, dict] = {}

    # --- what tests assert on --------------------------------------------------------------------------------

    def members(self, list_id: str) -> set[str]:
        """The hashes currently in the customer list."""
        with self._lock:
            return set(self._members[str(list_id)])

    def customer_list(self, list_id: str) -> dict:
        """What `GET …/customer_lists/{id}` answers."""
        with self._lock:
            return self._list_view(str(list_id))

    def audience(self, audience_id: str) -> dict:
        """What `GET …/audiences/{id}` answers."""
        with self._lock:
            return self._audience_view(str(audience_id))

    # --- dispatch --------------------------------------------------------------------------------------------

    def _respond(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path.rstrip("/"), request.method
        try:
            self._authenticate(request)
            if (match := re.fullmatch(_ACCOUNT, path)) and method == "GET":
                return json_response(self._account(match[1]))
            if (match := re.fullmatch(_ACCOUNT + r"/customer_lists", path)) and method == "GET":
                self._account(match[1])
                return json_response(self._page(list(self._lists), self._list_view, request.url.params))
            if (match := re.fullmatch(_ACCOUNT + r"/customer_lists", path)) and method == "POST":
                self._write(match[1])
                return json_response(self._create_list(_object(request)))
            if match := re.fullmatch(_ACCOUNT + r"/customer_lists/([^/]+)", path):
                if method == "GET":
                    self._account(match[1])
                    return json_response(self._list_view(self._known_list(match[2])))
                if method == "PATCH":
                    self._write(match[1])
                    return json_response(self._update_list(self._known_list(match[2]), _object(request)))
            if (match := re.fullmatch(_ACCOUNT + r"/audiences", path)) and method in ("GET", "POST"):
                if method == "GET":
                    self._account(match[1])
                    return json_response(self._audience_page(request.url.params))
                self._write(match[1])
                return json_response(self._create_audience(_object(request)))
            if (match := re.fullmatch(_ACCOUNT + r"/audiences/([^/]+)", path)) and method == "GET":
                self._account(match[1])
                if match[2] not in self._audiences:
                    raise _PinterestError(404, 2, "Audience not found.")
                return json_response(self._audience_view(match[2]))
            raise _PinterestError(404, 404, f"No route for {method} {request.url.path}.")
        except _PinterestError as error:
            return json_response({"code": error.code, "message": error.message}, error.status)

    def _rate_limited(self) -> httpx.Response:
        limit = int(self.requests_per_second or 0)
        headers = {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}
        return json_response({"code": 8, "message": RATE_LIMIT_MESSAGE}, 429, headers)

    def _authenticate(self, request: httpx.Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or self._access_token not in (None, token):
            raise _PinterestError(401, 2, "Authentication failed.")

    def _account(self, account: str) -> dict:
        if account != self.ad_account_id:
            raise _PinterestError(404, 2, "AdAccount not found.")
        return {"id": account, "name": "Sandbox ad account", "country": "US", "currency": "USD",
                "owner": {"username": "sandbox"}, "permissions": ["ADMIN"]}  # fmt: skip

    def _write(self, account: str) -> None:
        self._account(account)
        if WRITE_SCOPE not in self.scopes:
            raise _PinterestError(
                403, 3, "Your token does not have sufficient permissions to perform this operation. Please "
                "ensure your token is authorized with the correct set of scopes.",
            )  # fmt: skip

    # --- customer lists ----------------------------------------------------------------------------------------

    def _known_list(self, list_id: str) -> str:
        if list_id not in self._lists:
            raise _PinterestError(404, 2, "Customer list not found.")
        return list_id

    def _records(self, raw: object) -> list[str]:
        if not isinstance(raw, str):
            raise _invalid("records is required: one string of comma-separated records")
        records = [r.strip() for r in raw.split(",") if r.strip()]
        if not records:
            raise _invalid("records must hold at least one record")
        if len(records) > self.max_records:
            raise _invalid(
                f"Too many records: a request may carry at most {self.max_records}, got {len(records)}"
            )
        if not all(is_sha256_hex(r) for r in records):
            bad = next(i for i, r in enumerate(records) if not is_sha256_hex(r))
            raise _invalid(
                f"records[{bad}] is not a SHA-256 lowercase hex digest (the sandbox accepts no raw PII)"
            )
        return records

    def _create_list(self, body: dict) -> dict:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _invalid("name is required")
        list_type = body.get("list_type", "EMAIL")
        if list_type not in LIST_TYPES:
            raise _invalid(f"list_type must be one of {', '.join(LIST_TYPES)}")
        records = self._records(body.get("records"))
        list_id, now = next(self._list_ids), int(time.time())
        self._lists[list_id] = {
            "id": list_id, "ad_account_id": self.ad_account_id, "name": name, "created_time": now,
            "updated_time": now, "num_batches": 1, "num_uploaded_user_records": len(records),
            "num_removed_user_records": 0, "type": "customerlist", "exceptions": {}, "list_type": list_type,
        }  # fmt: skip
        self._members[list_id] = set(records)
        return self._list_view(list_id)

    def _update_list(self, list_id: str, body: dict) -> dict:
        operation = body.get("operation_type")
        if operation not in OPERATIONS:
            raise _invalid("operation_type must be ADD or REMOVE")
        records = self._records(body.get("records"))
        stored, members = self._lists[list_id], self._members[list_id]
        if operation == "ADD":
            members.update(records)
            stored["num_uploaded_user_records"] += len(records)  # grows even for records already in the list
        else:
            members.difference_update(records)
            stored["num_removed_user_records"] += len(records)  # grows even for records never in the list
        stored["num_batches"] += 1
        stored["updated_time"] = int(time.time())
        return self._list_view(list_id)

    def _status(self, list_id: str) -> str:
        return "READY" if len(self._members[list_id]) >= MIN_READY else "TOO_SMALL"

    def _list_view(self, list_id: str) -> dict:
        view = {k: v for k, v in self._lists[list_id].items() if k != "list_type"}
        return view | {"status": self._status(list_id)}

    # --- audiences ---------------------------------------------------------------------------------------------

    def _create_audience(self, body: dict) -> dict:
        name, audience_type, rule = body.get("name"), body.get("audience_type"), body.get("rule")
        if not isinstance(name, str) or not name.strip():
            raise _invalid("name is required")
        if not isinstance(rule, dict):
            raise _invalid("rule is required")
        if audience_type == "CUSTOMER_LIST":
            rule = self._customer_list_rule(rule)
        elif audience_type == "ACTALIKE":
            rule = self._actalike_rule(rule)
        else:
            raise _invalid("audience_type must be CUSTOMER_LIST or ACTALIKE in this sandbox")
        audience_id, now = next(self._audience_ids), int(time.time())
        self._audiences[audience_id] = {
            "id": audience_id, "ad_account_id": self.ad_account_id, "name": name, "audience_type": audience_type,
            "rule": rule, "description": body.get("description"), "type": "audience",
            "created_timestamp": now, "updated_timestamp": now, "created_by_company_name": None,
        }  # fmt: skip
        return self._audience_view(audience_id)

    def _customer_list_rule(self, rule: dict) -> dict:
        list_id = rule.get("customer_list_id")
        if not isinstance(list_id, str) or list_id not in self._lists:
            raise _invalid("rule.customer_list_id must name a customer list of this ad account")
        if any(a["rule"].get("customer_list_id") == list_id for a in self._audiences.values()):
            raise _invalid(f"customer list {list_id} already has an audience")
        return {"customer_list_id": list_id}

    def _actalike_rule(self, rule: dict) -> dict:
        seeds, country, percentage = rule.get("seed_id"), rule.get("country"), rule.get("percentage")
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, str) for s in seeds):
            raise _invalid("rule.seed_id must be a non-empty list of audience ids")
        if country not in ACTALIKE_COUNTRIES:
            raise _invalid(f"rule.country must be one of {', '.join(ACTALIKE_COUNTRIES)}")
        if isinstance(percentage, str) and percentage.isdigit():  # the spec's own example sends "10"
            percentage = int(percentage)
        if isinstance(percentage, bool) or not isinstance(percentage, int) or not 1 <= percentage <= 10:
            raise _invalid("rule.percentage should be 1-10")
        for seed in seeds:
            if seed not in self._audiences or self._audiences[seed]["audience_type"] != "CUSTOMER_LIST":
                raise _invalid(f"seed {seed} is not a customer list audience of this ad account")
            if self._audience_view(seed)["status"] != "READY":
                raise _invalid(
                    f"seed audience {seed} is not READY: it needs at least {MIN_READY} matched users"
                )
        return {"seed_id": list(seeds), "country": country, "percentage": percentage}

    def _audience_view(self, audience_id: str) -> dict:
        audience = dict(self._audiences[audience_id])
        list_id = audience["rule"].get("customer_list_id")
        if list_id is None:  # an actalike: Pinterest computes it asynchronously; the sandbox never does
            return audience | {"size": None, "status": "INITIALIZING"}
        status = self._status(list_id)
        return audience | {
            "size": len(self._members[list_id]) if status == "READY" else None,
            "status": status,
        }

    def _audience_page(self, params: httpx.QueryParams) -> dict:
        return self._page(list(self._audiences), self._audience_view, params)

    def _page(self, ids: list[str], view, params: httpx.QueryParams) -> dict:
        """One page of `ids` rendered by `view`, Pinterest's `page_size`/`bookmark` paging."""
        try:
            size = int(params.get("page_size", 25))
            start = int(params.get("bookmark") or 0)
        except ValueError:
            raise _invalid("page_size and bookmark must be numeric") from None
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise _invalid(f"page_size must be 1-{MAX_PAGE_SIZE}")
        items = [view(i) for i in ids[start : start + size]]
        return {"items": items, "bookmark": str(start + size) if start + size < len(ids) else None}


def _object(request: httpx.Request) -> dict:
    try:
        body = json_body(request)
    except ValueError as error:
        raise _invalid(str(error)) from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object")
    return body


def embedded(**settings: object) -> PinterestSandbox:
    """The in-process sandbox a run uses when no Pinterest credentials are set (see transports.py)."""
    return PinterestSandbox(**settings)
