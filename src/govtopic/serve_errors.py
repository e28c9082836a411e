"""What the service answers to a request it cannot take: body limits, undecodable bytes and invalid fields.

Every refusal is a JSON object ``{"error": "...", "problems": [{"field": ..., "problem": ...}]}`` whose message
says what was expected, what was found and what to change (the request, or the server option for a limit).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from fastapi.responses import JSONResponse

from govtopic.strategies import strategy_names

# Shown in messages: the smallest request the service takes.
EXAMPLE = '{"document": "各区人民政府……"} or {"documents": [{"title": "...", "text": "..."}]}'
# Union members pydantic names in an error's location ("documents.0.str"); the client never wrote them.
_UNION_TAGS = {"str", "DocumentIn", "function-after[...]"}
# Digits of the longest integer Python's JSON parser reads (sys.get_int_max_str_digits()).
_DIGITS = sys.get_int_max_str_digits()


def problems_response(
    status: int, message: str, problems: list[dict], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "problems": problems}, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """ASGI middleware: refuses a body above ``limit`` bytes (413), one that is not UTF-8 (400) and, on
    ``json_paths``, one not sent as JSON (415), before the application reads it; bodies are read in full here
    (bounded by ``limit``) and handed on unchanged.

    A body whose content-type is not ``application/json`` is refused even when it holds valid JSON (curl's ``-d``
    sends ``application/x-www-form-urlencoded``): a web page may send such a body to any address without the
    browser asking the server first (CORS preflight), and FastAPI would otherwise hand it on as bytes."""

    def __init__(self, app, limit: int, json_paths: frozenset[str] = frozenset()):
        self.app, self.limit, self.json_paths = app, limit, json_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(int(declared), scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(size, scope, receive, send, read_all=False)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            response = problems_response(
                400,
                f"the request body is not UTF-8 text (byte {body[err.start]:#04x} at offset {err.start} cannot be "
                "decoded): send JSON encoded as UTF-8 (json.dumps(...).encode('utf-8'))",
                [{"field": "body", "problem": "not UTF-8"}],
            )
            return await response(scope, receive, send)
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if body and scope["path"] in self.json_paths and not is_json(content_type):
            return await not_json(content_type)(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # after the body: wait for the disconnect as usual
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _too_large(self, size: int, scope, receive, send, read_all: bool = True):
        response = problems_response(
            413,
            f"the request body is {'at least ' if not read_all else ''}{size} bytes, above the limit of {self.limit} "
            "bytes; send fewer or shorter documents per request, or start the server with a larger "
            "--max-body-bytes",
            [{"field": "body", "problem": "too large"}],
            headers={"Connection": "close"},  # the rest of the body is not read
        )
        await response(scope, receive, send)


def is_json(content_type: str) -> bool:
    """Whether a content-type header names JSON (``application/json``, ``application/problem+json``...)."""
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def not_json(content_type: str) -> JSONResponse:
    """415 for a body sent with another content-type than JSON, saying how to send it."""
    found = f"content-type {content_type!r}" if content_type else "no content-type"
    return problems_response(
        415,
        f"the request body was sent with {found}: send it as JSON with the header content-type: application/json "
        f"(curl: -H 'content-type: application/json'; Python: httpx.post(url, json=...)), such as {EXAMPLE}",
        [{"field": "body", "problem": f"not sent as JSON ({found})"}],
    )


def parse_problem(cause: BaseException | None) -> tuple[str, str]:
    """(message, problem) for a body that is JSON text the parser gave up on (FastAPI answers those with "There
    was an error parsing the body" and keeps the parser's error as the cause)."""
    if isinstance(cause, RecursionError):
        reason = "nested too deeply (lists or objects within each other beyond Python's recursion limit)"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        digits = re.search(r"value has (\d+) digits", str(cause))
        reason = f"a number of {digits[1] if digits else 'too many'} digits, above the limit of {_DIGITS} digits"
    else:
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else "unreadable"
    message = f"malformed JSON: {reason}; send a JSON object such as {EXAMPLE}"
    return message, f"malformed JSON ({reason.split(' (')[0]})"


def validation_problems(errors: list[dict[str, Any]]) -> tuple[int, str, list[dict]]:
    """(status, message, problems) for pydantic's errors on a request body: one problem per field, named as
    the client wrote it (``documents[3].text``), with the expected type and the value found."""
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        where = err.get("loc", ("body", 0))[-1]
        reason = (err.get("ctx") or {}).get("error", "invalid JSON")
        message = f"malformed JSON: {reason} at character {where}; send a JSON object such as {EXAMPLE}"
        return 400, message, [{"field": "body", "problem": f"malformed JSON ({reason})"}]
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "missing" for e in errors):
        message = f"empty request body: send a JSON object such as {EXAMPLE} with content-type application/json"
        return 422, message, [{"field": "body", "problem": "empty"}]
    problems: dict[str, str] = {}
    for err in _without_union_alternatives(errors):
        field = _field_name(err.get("loc", ()))
        problems.setdefault(field, _problem(err, field))
    listed = [{"field": f, "problem": p} for f, p in problems.items()]
    message = "invalid request: " + "; ".join(f"{f}: {p}" for f, p in problems.items())
    return 422, message, listed


def _without_union_alternatives(errors: list[dict]) -> list[dict]:
    """A document that is neither a str nor a valid object fails both union members; when it is an object, the
    object's own errors are the useful ones, so the "not a string" alternative is dropped."""
    deep = {_field_name(e["loc"][:-2]) for e in errors if len(e.get("loc", ())) > 2 and e["loc"][-2] in _UNION_TAGS}
    kept, seen_union = [], set()
    for err in errors:
        loc = tuple(err.get("loc", ()))
        tagged = [i for i, part in enumerate(loc) if part in _UNION_TAGS]
        if tagged:
            base = _field_name(loc[: tagged[0]])
            if loc[-1] in _UNION_TAGS and base in deep:
                continue  # e.g. documents[0] "not a str" beside documents[0].title "not a str"
            if loc[-1] in _UNION_TAGS:
                if base in seen_union:
                    continue
                seen_union.add(base)
                err = {**err, "type": "document_type", "loc": loc[: tagged[0]]}
        kept.append(err)
    return kept


def _field_name(loc: tuple) -> str:
    name = ""
    for part in loc:
        if part == "body" and not name or part in _UNION_TAGS:
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _found(value: Any) -> str:
    """The value a client sent, shortened; any value (bytes, a structure too deep to print) gives a string."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value) if isinstance(value, (bytes, bytearray)) else f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(err: dict, field: str) -> str:
    kind, value = err.get("type", ""), err.get("input")
    if kind == "extra_forbidden":
        if field.startswith("document"):
            return "unknown field; a document object has 'title', 'text' and 'id'"
        return "unknown field; the fields are 'document' or 'documents', 'top_k', 'long_doc', 'return_evidence'"
    if kind == "document_type":
        return f'expected a string (the text) or an object {{"title": ..., "text": ...}}, found {_found(value)}'
    if kind.startswith("model") or kind == "dict_type":
        return f"expected a JSON object such as {EXAMPLE}, found {_found(value)}"
    if kind == "list_type":
        return f"expected a list of documents, found {_found(value)}"
    if kind == "literal_error":
        return f"expected {', '.join(repr(n) for n in strategy_names())} or null, found {_found(value)}"
    if kind.startswith(("greater_than", "less_than")):
        return f"{err.get('msg', 'out of range').lower()}, found {_found(value)}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = kind.split("_")[0].replace("bool", "true or false").replace("int", "a whole number")
        expected = expected.replace("string", "a string")
        return f"expected {expected}, found {_found(value)}"
    return f"{err.get('msg', 'invalid')}, found {_found(value)}"
