"""Neon's published OpenAPI definition of API v2, and every request and response held to it.

The definition is read from `../shared/neon/openapi-v2.json` beside the repository (never copied
into it); without it the tests that need it skip and say where they looked. openapi-core does the
validating: paths, methods, parameters, required fields, enums and formats, as the definition has
them. Calls are matched against the definition's own server (https://console.neon.tech/api/v2),
whatever host actually answered them, so the test double is judged by the same paths as Neon.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.conftest import ROOT

DEFINITION = ROOT.parent / "shared" / "neon" / "openapi-v2.json"
SERVER = "https://console.neon.tech"  # the definition's server is SERVER + PREFIX
PREFIX = "/api/v2"


@dataclass
class Call:
    """One HTTP request, in the shape openapi-core reads (its Request protocol)."""

    method: str
    path: str  # under PREFIX, e.g. /api/v2/projects/p/branches
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    host_url: str = SERVER

    def __post_init__(self) -> None:
        self.method = self.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(self.query), header=Headers(dict(self.headers))
        )

    @classmethod
    def of(cls, request: httpx.Request) -> Call:
        return cls(
            request.method,
            request.url.path,
            list(request.url.params.multi_items()),
            dict(request.headers),
            request.content or None,
            request.headers.get("content-type", "application/json"),
        )

    @classmethod
    def at(cls, method: str, url: str, headers: Mapping[str, str], body: bytes | None, ctype: str) -> Call:
        parts = urlsplit(url)
        return cls(method, parts.path, parse_qsl(parts.query), headers, body or None, ctype or "application/json")


@dataclass
class Answer:
    """One HTTP response, in the shape openapi-core reads (its Response protocol)."""

    status_code: int
    data: bytes | None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


class Contract:
    def __init__(self, path: Path) -> None:
        self.app = OpenAPI.from_file_path(str(path))

    def request_problems(self, call: Call) -> list[str]:
        return [_describe(e) for e in self.app.iter_request_errors(call)]

    def response_problems(self, call: Call, answer: Answer) -> list[str]:
        return [_describe(e) for e in self.app.iter_response_errors(call, answer)]

    def watch(self, client: httpx.Client) -> list[str]:
        """Check every request `client` sends and every response it receives from now on; the
        problems found are appended to the list returned (empty when all is as defined)."""
        found: list[str] = []

        def on_request(request: httpx.Request) -> None:
            found.extend(f"{request.method} {request.url.path}: {p}" for p in self.request_problems(Call.of(request)))

        def on_response(response: httpx.Response) -> None:
            response.read()
            call = Call.of(response.request)
            answer = Answer(response.status_code, response.content, _mimetype(response.headers))
            found.extend(
                f"{call.method.upper()} {call.path} -> {response.status_code}: {p}"
                for p in self.response_problems(call, answer)
            )

        client.event_hooks = {"request": [on_request], "response": [on_response]}
        return found

    def fixture(self, method: str, path: str, status: int, body: Any) -> Any:
        """A response body a test feeds the client, refused unless Neon could have sent it."""
        call = Call(method, PREFIX + path, headers={"Authorization": "Bearer k"})
        problems = self.response_problems(call, Answer(status, json.dumps(body).encode()))
        assert not problems, f"fixture for {method} {path} -> {status} is not what Neon returns: {problems}"
        return body


@cache
def _load(path: Path) -> Contract:
    return Contract(path)


def contract() -> Contract:
    """The definition, loaded once; skips the calling test when the file is not there."""
    if not DEFINITION.is_file():
        pytest.skip(f"Neon's OpenAPI definition not found at {DEFINITION} (../shared/neon of the repo)")
    return _load(DEFINITION)


def _mimetype(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "application/json").split(";")[0].strip().lower()


def _describe(error: Exception) -> str:
    """The validator's error with the schema errors under it (its own message is only a class name)."""
    cause = error.__cause__
    details = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
        for e in getattr(cause, "schema_errors", ())
    ]
    if details:
        return f"{type(error).__name__}: " + "; ".join(details)
    return f"{type(error).__name__}: {cause or error}"
