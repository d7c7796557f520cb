"""Customer.io Track API v2 batch, manual-segment membership and the App API's segment calls, with people kept.

What a sync can trip over is reproduced: Basic (Track) vs Bearer (App) auth, the 500 KB batch and 32 KB op
limits, 207 per-index errors for invalid ops while every other op is applied, a whole-request 400 for a batch that
does not match the envelope schema, segment calls capped at 1,000 ids and 404 for an unknown segment, unknown ids
silently ignored by segment calls, and events deduplicated by `id`. Which problems yield a 400 and which a 207 is
not documented; this sandbox's split (envelope `type` or non-object item → 400, content → 207) is an assumption.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx

from retention_pipeline.sandbox.recording import RecordingSandbox, json_body, json_response

PERSON_ACTIONS = frozenset(
    {"identify", "delete", "event", "screen", "page", "add_relationships", "delete_relationships",
     "add_device", "delete_device", "merge", "suppress", "unsuppress"}
)  # fmt: skip
NAMED_ACTIONS = frozenset({"event", "screen", "page"})
OP_TYPES = frozenset({"person", "object", "delivery"})
PERSON_IDENTIFIERS = ("id", "email", "phone", "cio_id")
SEGMENT_ID_TYPES = ("id", "email", "cio_id")
MAX_IDENTIFIER_BYTES = 150
MAX_EVENT_NAME_BYTES = 100
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_UNAUTHORIZED = {"meta": {"error": "Unauthorized request"}}


@dataclass
class _Person:
    cio_id: str
    id: str | None = None
    email: str | None = None
    phone: str | None = None
    attributes: dict = field(default_factory=dict)
    suppressed: bool = False

    def view(self) -> dict:
        return {
            "cio_id": self.cio_id,
            "id": self.id,
            "email": self.email,
            "phone": self.phone,
            "attributes": dict(self.attributes),
            "suppressed": self.suppressed,
        }


class _OpError(Exception):
    def __init__(self, reason: str, field_name: str, message: str) -> None:
        super().__init__(message)
        self.error = {"reason": reason, "field": field_name, "message": message}


class _RequestError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _meta_error(status: int, message: str) -> _RequestError:
    return _RequestError(status, {"meta": {"errors": [message]}})


class CustomerIoSandbox(RecordingSandbox):
    """One workspace. Credentials left as None accept any non-empty value of the right scheme."""

    def __init__(
        self,
        *,
        site_id: str | None = None,
        api_key: str | None = None,
        app_api_key: str | None = None,
        region: str = "us",
        requests_per_second: float | None = None,
        max_batch_bytes: int = 500_000,
        max_op_bytes: int = 32_000,
        max_segment_ids: int = 1000,
    ) -> None:
        super().__init__(requests_per_second)
        if region not in ("us", "eu"):
            raise ValueError(f"region must be us or eu, got {region!r}")
        self.region = region
        self.max_batch_bytes = max_batch_bytes
        self.max_op_bytes = max_op_bytes
        self.max_segment_ids = max_segment_ids
        self.duplicate_events_dropped = 0
        self._site_id, self._api_key, self._app_api_key = site_id, api_key, app_api_key
        self._people: dict[str, _Person] = {}
        self._index: dict[str, dict[str, str]] = {"id": {}, "email": {}, "phone": {}}
        self._cio_ids = (f"{n:x}" for n in itertools.count(0xC10000))
        self._events: list[dict] = []
        self._event_ids: set[str] = set()
        self._segments: dict[int, dict] = {}
        self._segment_ids = itertools.count(1)
        self._members: dict[int, set[str]] = {}
        self._rejected: dict[str, str] = {}
        self._rules: list[Callable[[dict], str | None]] = []
        self._routes: list[tuple[str, re.Pattern[str], str, Callable[..., httpx.Response]]] = [
            ("POST", re.compile(r"/api/v2/batch"), "track", self._batch),
            ("GET", re.compile(r"/api/v1/accounts/region"), "track", self._region),
            ("POST", re.compile(r"/api/v1/segments/(?P<segment_id>[^/]+)/add_customers"), "track", self._add),
            (
                "POST",
                re.compile(r"/api/v1/segments/(?P<segment_id>[^/]+)/remove_customers"),
                "track",
                self._remove,
            ),
            ("POST", re.compile(r"/v1/segments"), "app", self._app_create_segment),
            ("GET", re.compile(r"/v1/segments"), "app", self._app_list_segments),
            ("GET", re.compile(r"/v1/segments/(?P<segment_id>[^/]+)"), "app", self._app_get_segment),
            ("DELETE", re.compile(r"/v1/segments/(?P<segment_id>[^/]+)"), "app", self._app_delete_segment),
            (
                "GET",
                re.compile(r"/v1/segments/(?P<segment_id>[^/]+)/customer_count"),
                "app",
                self._app_count,
            ),
            (
                "GET",
                re.compile(r"/v1/segments/(?P<segment_id>[^/]+)/membership"),
                "app",
                self._app_membership,
            ),
        ]

    # --- what tests assert on --------------------------------------------------------------------------------

    def people(self) -> list[dict]:
        with self._lock:
            return [p.view() for p in self._people.values()]

    def person(self, **identifier: str) -> dict | None:
        """`person(id="42")`, `person(email="a@b.com")`, `person(cio_id=...)`: the stored person or None."""
        ((kind, value),) = identifier.items()
        with self._lock:
            found = self._find(kind, value)
            return found.view() if found else None

    def accepted_events(self) -> list[dict]:
        """Events kept after `id` deduplication, in arrival order, each with the person's cio_id."""
        with self._lock:
            return [dict(e) for e in self._events]

    def create_segment(self, name: str, description: str = "") -> int:
        """A manual segment, as the App API would create it; returns its id."""
        with self._lock:
            return self._new_segment(name, description)["id"]

    def segment_members(self, segment_id: int, id_type: str = "id") -> set[str]:
        """Members of a manual segment by `id_type`; people without that identifier are left out."""
        with self._lock:
            people = (self._people[c] for c in self._members.get(int(segment_id), set()))
            return {v for p in people if (v := getattr(p, id_type)) is not None}

    def reject_identifiers(self, *values: str, reason: str = "invalid_identifier") -> None:
        """Batch ops naming any of these identifier values fail with a 207 error at their index."""
        with self._lock:
            self._rejected.update(dict.fromkeys(values, reason))

    def reject_ops(self, rule: Callable[[dict], str | None]) -> None:
        """Batch ops for which `rule(op)` returns a reason fail with a 207 error carrying that reason."""
        with self._lock:
            self._rules.append(rule)

    # --- dispatch --------------------------------------------------------------------------------------------

    def _respond(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        for method, pattern, api, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                if not self._authorized(request, api):
                    return json_response(_UNAUTHORIZED, 401)
                try:
                    return handler(request, **match.groupdict())
                except _RequestError as error:
                    return json_response(error.body, error.status)
        return json_response({"meta": {"errors": ["Not found"]}}, 404)

    def _rate_limited(self) -> httpx.Response:
        # Customer.io documents no body or Retry-After for 429; the segment docs quote this sentence.
        limit = f"{self.requests_per_second:g}"
        return json_response({"meta": {"error": f"Your request is over the {limit}-per-second limit."}}, 429)

    def _authorized(self, request: httpx.Request, api: str) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if api == "app":
            token = credentials.strip()
            return scheme.lower() == "bearer" and bool(token) and self._app_api_key in (None, token)
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            scheme.lower() == "basic"
            and bool(user)
            and bool(password)
            and self._site_id in (None, user)
            and self._api_key in (None, password)
        )

    # --- Track v2 batch ----------------------------------------------------------------------------------------

    def _batch(self, request: httpx.Request) -> httpx.Response:
        if len(request.content) > self.max_batch_bytes:
            raise _whole("batch", "too_large", f"Request body exceeds {self.max_batch_bytes} bytes")
        try:
            body = json_body(request)
        except ValueError as error:
            raise _whole("batch", "invalid", str(error)) from None
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list) or not body["batch"]:
            raise _whole("batch", "required", "batch must be a non-empty array of operations")
        ops = body["batch"]
        for op in ops:
            if not isinstance(op, dict) or op.get("type") not in OP_TYPES:
                raise _whole("type", "invalid", f"every operation needs a type in {sorted(OP_TYPES)}")
        errors = []
        for index, op in enumerate(ops):
            try:
                self._check_size(op)
                self._apply(op)
            except _OpError as error:
                errors.append({"batch_index": index, **error.error})
        return json_response({"errors": errors}, 207) if errors else json_response({})

    def _check_size(self, op: dict) -> None:
        size = len(json.dumps(op, separators=(",", ":"), ensure_ascii=False).encode())
        if size > self.max_op_bytes:
            raise _OpError("too_large", "", f"operation is {size} bytes; the limit is {self.max_op_bytes}")

    def _apply(self, op: dict) -> None:
        if op["type"] != "person":
            if not isinstance(op.get("identifiers"), dict) or not op["identifiers"]:
                raise _OpError("required", "identifiers", "identifiers are required")
            return  # objects and deliveries are accepted but not modelled
        action = op.get("action")
        if action not in PERSON_ACTIONS:
            raise _OpError("invalid", "action", f"action must be one of {sorted(PERSON_ACTIONS)}")
        if action == "merge":
            primary = self._identifier(op, "primary")
            secondary = self._identifier(op, "secondary")
            self._check_rules(op, (primary, secondary))
            self._merge(primary, secondary)
            return
        identifier = self._identifier(op, "identifiers")
        name = op.get("name")
        if action in NAMED_ACTIONS:
            if not isinstance(name, str) or not name.strip():
                raise _OpError("required", "name", f"{action} operations need a name")
            if len(name.strip().encode()) > MAX_EVENT_NAME_BYTES:
                raise _OpError("too_large", "name", f"name exceeds {MAX_EVENT_NAME_BYTES} bytes")
        attributes = op.get("attributes", {})
        if not isinstance(attributes, dict):
            raise _OpError("invalid", "attributes", "attributes must be an object")
        self._check_rules(op, (identifier,))
        if action == "identify":
            self._identify(identifier, attributes)
        elif action in NAMED_ACTIONS:
            self._track(identifier, op, name.strip(), attributes)
        elif action == "delete":
            self._delete(identifier)
        elif action in ("suppress", "unsuppress"):
            person = self._resolve(identifier, create=True)
            person.suppressed = action == "suppress"

    def _identifier(self, op: dict, key: str) -> tuple[str, str]:
        value = op.get(key)
        if not isinstance(value, dict) or len(value) != 1:
            raise _OpError("required", key, f"{key} needs exactly one of {', '.join(PERSON_IDENTIFIERS)}")
        ((kind, raw),) = value.items()
        if kind not in PERSON_IDENTIFIERS:
            raise _OpError("invalid", f"{key}.{kind}", f"{kind} is not a person identifier")
        if not isinstance(raw, str | int) or isinstance(raw, bool) or str(raw) == "":
            raise _OpError("required", f"{key}.{kind}", f"{kind} must be a non-empty string")
        text = str(raw)
        if len(text.encode()) > MAX_IDENTIFIER_BYTES:
            raise _OpError("too_large", f"{key}.{kind}", f"{kind} exceeds {MAX_IDENTIFIER_BYTES} bytes")
        if kind == "phone" and not _E164.fullmatch(text):
            raise _OpError("invalid", f"{key}.phone", "phone must be E.164 (+ and up to 15 digits)")
        if kind == "email" and "@" not in text:
            raise _OpError("invalid", f"{key}.email", "email is not an email address")
        return kind, text

    def _check_rules(self, op: dict, identifiers: tuple[tuple[str, str], ...]) -> None:
        for _, value in identifiers:
            if value in self._rejected:
                raise _OpError(self._rejected[value], "identifiers", "identifier rejected by the workspace")
        for rule in self._rules:
            reason = rule(op)
            if reason:
                raise _OpError(reason, "", "operation rejected by the workspace")

    # --- people --------------------------------------------------------------------------------------------

    def _find(self, kind: str, value: str) -> _Person | None:
        if kind == "cio_id":
            return self._people.get(value)
        key = value.lower() if kind == "email" else value  # email identifiers are case-insensitive
        cio_id = self._index[kind].get(key)
        return self._people.get(cio_id) if cio_id else None

    def _resolve(self, identifier: tuple[str, str], *, create: bool) -> _Person | None:
        kind, value = identifier
        person = self._find(kind, value)
        if person is None and create and kind != "cio_id":
            person = _Person(next(self._cio_ids))
            self._people[person.cio_id] = person
            self._set_identifier(person, kind, value)
        return person

    def _set_identifier(self, person: _Person, kind: str, value: str | None) -> None:
        old = getattr(person, kind)
        if old is not None:
            self._index[kind].pop(old.lower() if kind == "email" else old, None)
        setattr(person, kind, value)
        if value is not None:
            self._index[kind][value.lower() if kind == "email" else value] = person.cio_id

    def _identify(self, identifier: tuple[str, str], attributes: dict) -> None:
        update_only = attributes.get("_update") is True
        person = self._resolve(identifier, create=not update_only)
        if person is None:
            return  # `_update: true` with nobody matching: nothing is created
        for key, value in attributes.items():
            if key.startswith("_"):
                continue
            if key in ("id", "email", "phone"):
                self._set_identifier(person, key, None if value in (None, "") else str(value))
            elif value is None or value == "":
                person.attributes.pop(key, None)  # null or "" deletes an attribute
            else:
                person.attributes[key] = value

    def _track(self, identifier: tuple[str, str], op: dict, name: str, attributes: dict) -> None:
        event_id = op.get("id")
        if event_id is not None:
            if event_id in self._event_ids:
                self.duplicate_events_dropped += 1
                return
            self._event_ids.add(event_id)
        person = self._resolve(identifier, create=True)
        self._events.append(
            {
                "cio_id": person.cio_id if person else None,
                "identifiers": dict([identifier]),
                "type": op["action"],
                "name": name,
                "id": event_id,
                "timestamp": op.get("timestamp"),
                "attributes": attributes,
            }
        )

    def _delete(self, identifier: tuple[str, str]) -> None:
        person = self._resolve(identifier, create=False)
        if person is None:
            return
        for kind in ("id", "email", "phone"):
            self._set_identifier(person, kind, None)
        del self._people[person.cio_id]
        for members in self._members.values():
            members.discard(person.cio_id)

    def _merge(self, primary: tuple[str, str], secondary: tuple[str, str]) -> None:
        keep, drop = self._resolve(primary, create=False), self._resolve(secondary, create=False)
        if keep is None or drop is None or keep is drop:
            return
        merged = {**drop.attributes, **keep.attributes}
        identifiers = {k: getattr(keep, k) or getattr(drop, k) for k in ("id", "email", "phone")}
        self._delete(("cio_id", drop.cio_id))
        keep.attributes = merged
        for kind, value in identifiers.items():
            self._set_identifier(keep, kind, value)

    # --- Track: region and manual segments -------------------------------------------------------------------

    def _region(self, request: httpx.Request) -> httpx.Response:
        host = "https://track.customer.io" if self.region == "us" else "https://track-eu.customer.io"
        return json_response({"url": host, "region": self.region, "environment_id": 1})

    def _membership_change(self, request: httpx.Request, segment_id: str) -> tuple[int, list[_Person]]:
        segment = self._segment(segment_id)
        id_type = request.url.params.get("id_type", "id")
        if id_type not in SEGMENT_ID_TYPES:
            raise _meta_error(400, f"id_type must be one of {', '.join(SEGMENT_ID_TYPES)}")
        try:
            body = json_body(request)
        except ValueError as error:
            raise _meta_error(400, str(error)) from None
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            raise _meta_error(400, "ids must be a non-empty array")
        if len(ids) > self.max_segment_ids:
            raise _meta_error(400, f"ids may hold at most {self.max_segment_ids} values, got {len(ids)}")
        # Unknown ids, ids of another type and rejected ids are ignored without a word, as the real API does.
        people = [
            p
            for value in ids
            if isinstance(value, str | int)
            and str(value) not in self._rejected
            and (p := self._find(id_type, str(value))) is not None
        ]
        return segment["id"], people

    def _add(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        key, people = self._membership_change(request, segment_id)
        self._members[key].update(p.cio_id for p in people)
        return json_response({})

    def _remove(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        key, people = self._membership_change(request, segment_id)
        self._members[key].difference_update(p.cio_id for p in people)
        return json_response({})

    # --- App API ---------------------------------------------------------------------------------------------

    def _segment(self, segment_id: str) -> dict:
        try:
            key = int(unquote(segment_id))
        except ValueError:
            key = -1
        if key not in self._segments:
            raise _meta_error(404, f"segment {unquote(segment_id)} not found")
        return self._segments[key]

    def _new_segment(self, name: str, description: str) -> dict:
        """The segment object as the App API's "Create a manual segment" example shows it
        (https://docs.customer.io/integrations/api/app/tag/segments/createManSegment/)."""
        segment_id = next(self._segment_ids)
        created = 1700000000 + segment_id
        segment = {
            "id": segment_id,
            "deduplicate_id": f"{segment_id}:{created}",
            "name": name,
            "description": description,
            "state": "events",
            "progress": None,
            "type": "manual",
            "tags": None,
            "created_at": created,
            "updated_at": created,
        }
        self._segments[segment_id] = segment
        self._members[segment_id] = set()
        return segment

    def _app_create_segment(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json_body(request)
        except ValueError as error:
            raise _meta_error(400, str(error)) from None
        segment = body.get("segment") if isinstance(body, dict) else None
        if not isinstance(segment, dict) or not isinstance(segment.get("name"), str) or not segment["name"]:
            raise _meta_error(400, "segment.name is required")
        return json_response({"segment": self._new_segment(segment["name"], segment.get("description", ""))})

    def _app_list_segments(self, request: httpx.Request) -> httpx.Response:
        return json_response({"segments": list(self._segments.values())})

    def _app_get_segment(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        return json_response({"segment": self._segment(segment_id)})

    def _app_delete_segment(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        key = self._segment(segment_id)["id"]
        del self._segments[key], self._members[key]
        return httpx.Response(204)

    def _app_count(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        """`{"segment_id": 7, "count": 1}`, as "Get a segment customer count" documents
        (https://docs.customer.io/integrations/api/app/tag/segments/getSegmentCount/); counted at once here."""
        key = self._segment(segment_id)["id"]
        return json_response({"segment_id": key, "count": len(self._members[key])})

    def _app_membership(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        key = self._segment(segment_id)["id"]
        params = request.url.params
        try:
            limit = int(params.get("limit", "1000"))
            start = int(params.get("start") or 0)
        except ValueError:
            raise _meta_error(400, "start and limit must be integers") from None
        if not 1 <= limit <= 30_000 or start < 0:
            raise _meta_error(400, "limit must be between 1 and 30000")
        people = sorted((self._people[c] for c in self._members[key]), key=lambda p: p.cio_id)
        page = people[start : start + limit]
        body = {
            "identifiers": [{"id": p.id, "email": p.email, "cio_id": p.cio_id} for p in page],
            "ids": [p.id or "" for p in page],
        }
        if start + limit < len(people):
            body["next"] = str(start + limit)
        return json_response(body)


def _whole(field_name: str, reason: str, message: str) -> _RequestError:
    return _RequestError(400, {"errors": [{"reason": reason, "field": field_name, "message": message}]})


def embedded(**settings: object) -> CustomerIoSandbox:
    """The in-process sandbox a run uses when no Customer.io credentials are set (see transports.py)."""
    return CustomerIoSandbox(**settings)
