"""Decoding: the listen loop's one-step ``payload_of`` gives what hop's ``read()`` path gives.

The Kafka reader hands the listen loop the callback's payload directly
(``payload_of``); every other stream goes through hop's models (``decode``, then
``unwrap``). These pin the two to the same result, message by message, including the
messages that cannot be decoded (raw bytes, reported).
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Optional

import confluent_kafka
import pytest
from hop.models import Blob, JSONBlob

from igwn_alert import _decoding

ALERT = json.dumps({"uid": "S1", "alert_type": "new", "object": {"far": 1e-9}})


def message(value: Optional[bytes], fmt: Optional[bytes]) -> Any:
    headers = [("_id", b"0123456789abcdef")] + ([("_format", fmt)] if fmt is not None else [])
    return confluent_kafka.Message(
        topic="gracedb.superevent", partition=2, offset=7, value=value, headers=headers
    )


CASES = {
    "GraceDB JSON text": (json.dumps(ALERT).encode(), b"json"),
    "a JSON object": (json.dumps({"a": [1, 2]}).encode(), b"json"),
    "a JSON list": (b"[1, 2, 3]", b"json"),
    "JSON null": (b"null", b"json"),
    "not UTF-8": (b"\xff\xfe{", b"json"),
    "not JSON": (b"{nope", b"json"),
    "nested past the recursion limit": (b"[" * 100_000, b"json"),
    "no value": (None, b"json"),
    "hop blob": (b"raw bytes", b"blob"),
    "an unknown format": (b"payload", b"martian"),
    "no format header": (b'{"k": 1}', None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_payload_of_equals_decode_then_unwrap(case):
    value, fmt = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = _decoding.payload_of(message(value, fmt), fmt)
        slow = _decoding.unwrap(_decoding.decode(message(value, fmt), fmt))
    assert type(fast) is type(slow)
    assert fast == slow


def test_hop_json_gives_the_content_unchanged():
    # GraceDB's JSON text stays a str: never decoded twice
    assert _decoding.payload_of(message(json.dumps(ALERT).encode(), b"json"), b"json") == ALERT


@pytest.mark.parametrize("value", [b"\xff\xfe{", b"[" * 100_000, b"{nope"])
def test_undecodable_json_is_raw_bytes_reported_once(value, caplog):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = _decoding.payload_of(message(value, b"json"), b"json")
    assert isinstance(got, Blob) and got.content == value
    assert len(seen) == 1 and "cannot decode" in str(seen[0].message)


def test_decode_gives_a_jsonblob_equal_to_hops():
    got = _decoding.decode(message(b'{"a": 1}', b"json"), b"json")
    assert type(got) is JSONBlob and got == JSONBlob(content={"a": 1})
    assert repr(got) == repr(JSONBlob(content={"a": 1}))
