"""Seeded HTTP fuzz cases for the served app: random mutations of valid requests.

Every case is something a careless or hostile client could send: wrong types, out-of-range numbers, unknown or
missing fields, bytes that are not UTF-8, JSON that is invalid, truncated or nested thousands deep, strings at and
past the limits, empty bodies, other content types, wrong paths and methods, batches with bad members. The app
must answer each with a status below 500; a 5xx is a bug. `fuzz_cases(seed, n)` is deterministic.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from r4t.serve.messages import MAX_BATCH, MAX_BODY_BYTES, MAX_K, MAX_QUERY_CHARS, METHODS

JSON_TYPE = {"content-type": "application/json"}
QUERIES = ["beach vacation outfit", "winter office look", "red boots", "a cozy weekend look", "black tie evening"]
FIELDS = ("query", "k", "method", "guidance", "steps", "seed")


@dataclass(frozen=True)
class FuzzCase:
    kind: str  # which mutation made it
    method: str  # HTTP method
    path: str
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_TYPE))

    def describe(self, limit: int = 300) -> str:
        body = self.content[:limit]
        more = f"... ({len(self.content)} bytes)" if len(self.content) > limit else ""
        return f"{self.kind}: {self.method} {self.path} {self.headers} {body!r}{more}"


def valid_body(rng: random.Random) -> dict:
    body: dict = {"query": rng.choice(QUERIES)}
    if rng.random() < 0.7:
        body["k"] = rng.randint(1, 20)
    if rng.random() < 0.5:
        body["method"] = rng.choice(METHODS)
    if rng.random() < 0.2:
        body["seed"] = rng.randint(0, 2**31 - 1)
    if rng.random() < 0.2:
        body["steps"] = rng.randint(1, 8)
    if rng.random() < 0.2:
        body["guidance"] = rng.choice([0, 1.5, 10])
    return body


def _odd_value(rng: random.Random):
    """A value of a random JSON type, often at an edge."""
    return rng.choice([None, True, False, 0, -1, 2**31, 2**63, -(2**63), 10**30, 1.5, -0.0, 1e308, -1e308,
                       "", " ", "5", "R4T-Diffusion", "\u0000", "\ud83d\ude00" * 3, [], [1, "a"], {}, {"k": 1},
                       rng.randint(-10**6, 10**6), rng.random() * 1e6, "x" * rng.randint(0, 600)])


def _post(kind: str, body, path: str = "/v1/fanout", headers: dict | None = None) -> FuzzCase:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FuzzCase(kind, "POST", path, content, dict(JSON_TYPE) if headers is None else headers)


def _wrong_type(rng):
    body = valid_body(rng)
    body[rng.choice(FIELDS)] = _odd_value(rng)
    return _post("wrong type", body)


def _bad_number(rng):
    body = valid_body(rng)
    name = rng.choice(["k", "steps", "seed", "guidance"])
    body[name] = rng.choice([0, -1, -(2**31), MAX_K + 1, 257, 2**31, 2**53 + 1, 2**64, -(10**40), 11, -0.5])
    return _post(f"bad {name}", body)


def _number_literal(rng):
    """Numbers json.dumps would never write: NaN, Infinity, 1e999, thousands of digits."""
    literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 5000, "-" + "9" * 4400,
                          "0." + "1" * 5000, "1e-999", "01", "1.", ".5", "+1", "0x10"])
    name = rng.choice(["k", "steps", "seed", "guidance"])
    return _post(f"{name} literal", f'{{"query": "red boots", "{name}": {literal}}}'.encode())


def _unknown_field(rng):
    body = valid_body(rng)
    key = rng.choice(["extra", "K", "query ", "", "__proto__", "x" * 1000, "\u00e9", "requests"])
    body[key] = _odd_value(rng)
    return _post("unknown field", body)


def _missing_field(rng):
    body = valid_body(rng)
    for name in rng.sample(list(body), rng.randint(1, len(body))):
        del body[name]
    return _post("missing field", body)


def _duplicate_key(rng):
    return _post("duplicate key", f'{{"query": "red boots", "k": 3, "k": {json.dumps(_odd_value(rng))}}}'.encode())


# JSON escapes for strings that are hard to carry: lone surrogates, NUL, control and right-to-left characters.
ODD_STRINGS = [r"\ud800", r"\udfff x", r"a\u0000b", r"\u202e\u0007", r"\ud83d\ude00", r"\\", r"A\u030a", r"\ufeff",
               r"\uffff"]


def _odd_string(rng):
    template = rng.choice(['{{"query": "{}"}}', '{{"query": "red boots", "method": "{}"}}',
                           '{{"query": "red boots", "{}": 1}}', '{{"requests": [{{"query": "{}"}}]}}'])
    path = "/v1/fanout/batch" if template.startswith('{{"requests"') else "/v1/fanout"
    return _post("odd string", template.format(rng.choice(ODD_STRINGS)).encode(), path=path)


def _not_utf8(rng):
    content = bytearray(json.dumps(valid_body(rng)).encode())
    for _ in range(rng.randint(1, 4)):
        content.insert(rng.randrange(len(content) + 1), rng.choice([0x80, 0xC0, 0xC3, 0xED, 0xF8, 0xFE, 0xFF]))
    return _post("not UTF-8", bytes(content))


def _invalid_json(rng):
    content = bytearray(json.dumps(valid_body(rng)).encode())
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(content))
        op = rng.random()
        if op < 0.4:
            content[i] = rng.choice(b'{}[]",:\\ 0tfn')
        elif op < 0.7:
            del content[i]
        else:
            content.insert(i, rng.choice(b'{}[]",:\\'))
    return _post("invalid JSON", bytes(content))


def _truncated(rng):
    content = json.dumps(valid_body(rng)).encode()
    return _post("truncated JSON", content[:rng.randrange(len(content))])


def _deep(rng):
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    fits = (MAX_BODY_BYTES - 20) // len(opener + closer)  # deep, not big: the size check must not be what stops it
    depth = min(rng.choice([50, 900, 1100, 5000, 30000]), fits)
    nested = opener * depth + "1" + closer * depth
    return _post(f"nested {depth} deep", f'{{"query": {nested}}}'.encode() if rng.random() < 0.5 else nested.encode())


def _long_string(rng):
    """Queries about the field limit, and bodies about the size limit (checked before parsing)."""
    if rng.random() < 0.5:
        n = rng.choice([MAX_QUERY_CHARS - 1, MAX_QUERY_CHARS, MAX_QUERY_CHARS + 1, 5000])
        return _post(f"query of {n} chars", {"query": rng.choice("aé😀 ") * n})
    target = rng.choice([MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 4 * MAX_BODY_BYTES])
    return _post(f"body of {target} bytes", {"query": "x" * (target - len('{"query": ""}'))})


def _empty(rng):
    return _post("empty body", rng.choice([b"", b" ", b"\n", b"null", b"{}", b"[]", b'""', b"0", b"true"]))


def _content_type(rng):
    kind = rng.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                       "application/xml", "application/json; charset=latin-1", "application/json;;=", None])
    headers = {} if kind is None else {"content-type": kind}
    content = rng.choice([json.dumps(valid_body(rng)).encode(), b"query=red+boots&k=3",
                          b"--x\r\ncontent-disposition: form-data; name=\"query\"\r\n\r\nred\r\n--x--\r\n"])
    return _post("content type", content, headers=headers)


def _wrong_route(rng):
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST"])
    path = rng.choice(["/v1/fanout", "/v1/fanout/batch", "/v1/fanouts", "/v2/fanout", "/", "/v1/info/", "/healthz",
                       "/v1/fanout/../../etc/passwd", "/%00", "/v1/%ff", "/" + "a" * 4000, "/docs/x", "/v1//fanout",
                       "/v1/fanout?k=3&k=x", "/openapi.json"])
    if method == "POST" and path in ("/v1/fanout", "/v1/fanout/batch"):
        path = "/v1/fanout/unknown"
    content = json.dumps(valid_body(rng)).encode() if method in ("POST", "PUT", "PATCH") else b""
    return FuzzCase("wrong route", method, path, content)


def _bad_batch(rng):
    members = [valid_body(rng) for _ in range(rng.randint(1, 4))]
    bad = rng.choice([None, 5, "q", [], {"query": ""}, {"query": "q", "k": -1}, {"nope": 1}, _odd_value(rng)])
    op = rng.random()
    if op < 0.5:
        members.insert(rng.randrange(len(members) + 1), bad)
        body = {"requests": members}
    elif op < 0.7:
        body = {"requests": [valid_body(rng) for _ in range(MAX_BATCH + 1)]}
    elif op < 0.85:
        body = {"requests": bad}
    else:
        body = rng.choice([members, {"requests": members, "extra": 1}, {"request": members}, {"requests": [members]}])
    return _post("bad batch", body, path="/v1/fanout/batch")


def _valid(rng):
    if rng.random() < 0.25:
        return _post("valid batch", {"requests": [valid_body(rng) for _ in range(rng.randint(1, 4))]},
                     path="/v1/fanout/batch")
    return _post("valid", valid_body(rng))


# (weight, mutation): valid requests are a share of the load, so replicas do real work while being fuzzed.
MUTATIONS: list[tuple[float, Callable[[random.Random], FuzzCase]]] = [
    (10, _valid), (10, _wrong_type), (8, _bad_number), (6, _number_literal), (6, _unknown_field),
    (6, _missing_field), (3, _duplicate_key), (6, _odd_string), (6, _not_utf8), (8, _invalid_json), (6, _truncated),
    (5, _deep), (5, _long_string), (3, _empty), (4, _content_type), (5, _wrong_route), (8, _bad_batch)]


def fuzz_cases(seed: int, n: int) -> Iterator[FuzzCase]:
    """n cases, the same for the same seed."""
    rng = random.Random(seed)
    weights = [w for w, _ in MUTATIONS]
    for _ in range(n):
        yield rng.choices(MUTATIONS, weights)[0][1](rng)
