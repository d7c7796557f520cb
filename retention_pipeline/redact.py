"""Scrubbing for text we do not write ourselves: vendor and Metronome error messages, configured URLs.

The structural rules come first (previews list safe columns, payload values never go into our own messages); this
is the last line for what a vendor sends back, e.g. a 400 that echoes the address it refused. What is scrubbed:

- URL userinfo (`https://user:password@host` → `https://host`), anywhere in the text;
- email addresses → `<email>`;
- phone numbers written as phones → `<phone>`: with a leading `+` or `(`, or in three or more groups (`415-555-2671`,
  `415.555.2671`), 7-15 digits in all. A bare digit run (`4155552671`) is left alone: it cannot be told from an
  account id, a unix timestamp or a count, and the destinations are never sent a raw phone they could echo.

Ids, hashes, UUIDs, ISO dates and timestamps, IPv4 addresses, decimals and HTTP statuses survive.
"""

from __future__ import annotations

import re

EMAIL_MASK = "<email>"
PHONE_MASK = "<phone>"

# scheme:// then the authority up to its last "@" (a password may hold a raw "@"); the path, query and
# fragment never hold userinfo.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#]*@")
# Local part: RFC 5322 atext, dots and any letter (\w), but not "/" so a URL path keeps its shape. The lookbehind
# starts a match only at the beginning of a run and the possessive quantifiers never rescan it: linear time.
_LOCAL = r"\w.!#$%&'*+=?^`{|}~\-"
_EMAIL = re.compile(rf"(?<![{_LOCAL}])[{_LOCAL}]++@[\w\-]++(?:\.[\w\-]++)+")
# A digit run with phone separators, not glued to a word, path, version or negative number before it, nor to a
# word, path or time after it ("2026-11-20 10:30" is a date and a time). The bounded middle keeps the scan linear.
_PHONE = re.compile(r"(?<![\w+\-./])[+(]?[0-9][0-9 ().\-]{4,24}[0-9](?![\w\-./:])")
_GROUPS = re.compile(r"[0-9]+")
_DATE = re.compile(r"[0-9]{4}([\-.])[0-9]{1,2}\1[0-9]{1,2}|[0-9]{1,2}([\-.])[0-9]{1,2}\2[0-9]{4}")
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def redact_url(text: str) -> str:
    """`text` with the `user:password@` part of every URL in it removed."""
    return _USERINFO.sub(r"\1", text)


def redact_pii(text: str) -> str:
    """`text` with email addresses and phone numbers masked."""
    return _PHONE.sub(_phone, _EMAIL.sub(EMAIL_MASK, text))


def redact(text: str) -> str:
    """Both: URL credentials first, so `password@host.com` is not mistaken for an address."""
    return redact_pii(redact_url(text))


def _phone(match: re.Match) -> str:
    return _mask_phone(match.group(0))


def _mask_phone(candidate: str) -> str:
    groups = _GROUPS.findall(candidate)
    digits = sum(map(len, groups))
    if digits > 15 and " " in candidate:
        return _mask_runs(candidate)
    if digits < 7 or digits > 15 or _DATE.fullmatch(candidate) or _IPV4.fullmatch(candidate):
        return candidate
    return PHONE_MASK if candidate[0] in "+(" or len(groups) >= 3 else candidate


def _mask_runs(candidate: str) -> str:
    """Numbers written side by side ("415-555-2671 01.12.2026"): judge runs of space-separated pieces of at most 15
    digits, starting a new run at every "+" or "(", so one number's digits do not hide the other."""
    pieces = re.split(r"( +)", candidate)
    out, run, run_digits = [], [], 0
    for index in range(0, len(pieces), 2):
        piece = pieces[index]
        digits = _digits(piece)
        if run and (run_digits + digits > 15 or piece[0] in "+("):
            out += [_mask_phone("".join(run[:-1])), run[-1]]
            run, run_digits = [], 0
        run += [piece, pieces[index + 1] if index + 1 < len(pieces) else ""]
        run_digits += digits
    out.append(_mask_phone("".join(run[:-1])))
    return "".join(out)


def _digits(text: str) -> int:
    return sum(len(group) for group in _GROUPS.findall(text))
