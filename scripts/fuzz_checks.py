"""Schemathesis hooks of `scripts/fuzz` (loaded through SCHEMATHESIS_HOOKS).

- `problem_json_errors`: a check that every 4xx and 5xx answer is an RFC 9457
  `application/problem+json` document with `type`, `title`, `status` (the HTTP status)
  and `code`, as the contract's "Errors" section says.
- Real ids: half of the generated reservation ids (in paths and in `POST /confirm`
  bodies) are swapped for reservations that exist, so the fuzzer reaches the handlers'
  success and conflict paths, not only 404. Event and category ids need no help: the
  database is fresh, ids start at 1, and the generator favours small numbers. The
  choice is a pure function of the generated value, so Hypothesis can replay and
  shrink a failing case.
"""

import json
import os
import zlib

import schemathesis

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_FIELDS = ("type", "title", "status", "code")
RESERVATION_IDS = [value for value in os.environ.get("FUZZ_RESERVATION_IDS", "").split(",") if value]


@schemathesis.check
def problem_json_errors(ctx, response, case):
    """Every error answer is problem+json with type, title, status and code."""
    if response.status_code < 400:
        return None
    content_types = response.headers.get("content-type", [])
    media_type = content_types[0].split(";")[0].strip().lower() if content_types else ""
    if media_type != PROBLEM_MEDIA_TYPE:
        raise AssertionError(f"a {response.status_code} answer has Content-Type {media_type!r}, not {PROBLEM_MEDIA_TYPE}")
    try:
        problem = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"a {response.status_code} problem+json body is not JSON: {error}") from None
    if not isinstance(problem, dict):
        raise AssertionError(f"a {response.status_code} problem+json body is not an object")
    missing = [field for field in PROBLEM_FIELDS if field not in problem]
    if missing:
        raise AssertionError(f"a {response.status_code} problem lacks {', '.join(missing)}")
    if problem["status"] != response.status_code:
        raise AssertionError(f"problem status {problem['status']} differs from the HTTP status {response.status_code}")
    if not isinstance(problem["code"], str) or not problem["code"]:
        raise AssertionError("problem code is not a non-empty string")
    return None


def real_reservation_id(generated):
    """A real reservation id for half of the generated values, else the value itself."""
    if not RESERVATION_IDS or not isinstance(generated, str):
        return generated
    digest = zlib.crc32(generated.encode("utf-8", "surrogatepass"))
    if digest % 2:
        return generated
    return RESERVATION_IDS[(digest // 2) % len(RESERVATION_IDS)]


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    if path_parameters and context.operation.path.startswith("/reservations/") and "id" in path_parameters:
        path_parameters["id"] = real_reservation_id(path_parameters["id"])
    return path_parameters


@schemathesis.hook
def map_body(context, body):
    if context.operation.path == "/confirm" and isinstance(body, dict) and "reservation_id" in body:
        body["reservation_id"] = real_reservation_id(body["reservation_id"])
    return body
