"""The query API's contract (schemas/openapi.json) as the tests check answers against it: the JSON
Schema of the answer a path gives with a status, following the document's ``$ref``s."""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator

from schemas import load_schema

__all__ = ["DOC", "answer_schema", "check_answer", "path_of"]

DOC = load_schema("openapi")
_TEMPLATE = re.compile(r"\{[^}]+\}")


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = DOC
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def path_of(url_path: str) -> str:
    """The documented path template that ``url_path`` (``/users/u1/trajectory``) matches."""
    url_path = url_path.split("?")[0]
    for template in DOC["paths"]:
        if re.fullmatch(_TEMPLATE.sub("[^/]+", template), url_path):
            return template
    raise AssertionError(f"{url_path} is not a documented path")


def answer_schema(template: str, status: int) -> dict[str, Any]:
    """The JSON Schema of a GET on ``template``'s answer with ``status``."""
    responses = DOC["paths"][template]["get"]["responses"]
    assert str(status) in responses, f"GET {template} is not documented to answer {status}"
    response = _deref(responses[str(status)])
    schema = response["content"]["application/json"]["schema"]
    # the components travel with the schema, so that its "#/components/..." references resolve
    return {**schema, "components": DOC["components"]}


def check_answer(url_path: str, status: int, body: Any) -> None:
    """Raise unless ``body`` is what the document says GET ``url_path`` answers with ``status``."""
    schema = answer_schema(path_of(url_path), status)
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"GET {url_path} → {status}: " + "; ".join(
        f"{'/'.join(map(str, e.path)) or '(body)'}: {e.message}" for e in errors[:5]
    )
