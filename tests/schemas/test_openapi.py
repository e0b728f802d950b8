"""The query API's OpenAPI document (schemas/openapi.json): a valid OpenAPI 3.1 document whose schemas
are valid JSON Schema, documenting exactly the routes the worker serves. tests/streams/test_views.py
and tests/integration/test_query_api.py check real answers against it (tests/openapi.py)."""

import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.openapi import DOC, answer_schema, check_answer, path_of

APP = Path(__file__).resolve().parents[2] / "streams" / "app.py"


def test_the_document_is_openapi_3_1_with_valid_schemas() -> None:
    assert DOC["openapi"].startswith("3.1.")
    assert DOC["info"]["title"] and DOC["info"]["version"]
    for name, schema in DOC["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    for template, item in DOC["paths"].items():
        params = set(re.findall(r"\{(\w+)\}", template))
        for method, op in item.items():
            assert method == "get", f"{method} {template}: the API is read-only"
            assert op.get("summary"), template
            declared = set()
            for p in op.get("parameters", []):
                p = DOC["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                if p["in"] == "path":
                    declared.add(p["name"])
            assert declared == params, f"{template}: path parameters {declared} ≠ {params}"
            for status, response in op["responses"].items():
                if "text/plain" not in response.get("content", {}):  # /metrics is Prometheus's text
                    Draft202012Validator.check_schema(answer_schema(template, int(status)))


def test_every_route_the_worker_serves_is_documented_and_nothing_else() -> None:
    served = set(re.findall(r'@app\.page\("([^"]+)"\)', APP.read_text()))
    assert served == set(DOC["paths"])


def test_answers_are_checked_against_the_document() -> None:
    assert path_of("/users/u%201/trajectory?x=1") == "/users/{user_id}/trajectory"
    check_answer("/items/a/similar", 404, {"error": "unknown item"})
    with pytest.raises(AssertionError, match="items/0/cosine"):
        check_answer("/items/a/similar", 200, {"item_id": "a", "items": [
            {"item_id": "b", "cosine": "high", "reason": "r", "shared_attributes": []}
        ]})
    with pytest.raises(AssertionError, match="not documented to answer 418"):
        check_answer("/health", 418, {})
