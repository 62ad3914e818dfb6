"""Result lines as they are stored and served: one NDJSON line each, whatever the output holds."""

from __future__ import annotations

import json

import httpx

from shared.wire.api import Output, ResultLine, Timings, Usage
from shared.wire.messages import encode_line

BREAKS = "a\u2028b\u2029c\x85d\x1ce\rf\ng"  # every line break str.splitlines knows, in one output


def _line(text: str) -> ResultLine:
    return ResultLine(
        custom_id="c",
        request_id="r",
        model="m",
        status="succeeded",
        output=Output(text=text, finish_reason="stop"),
        usage=Usage(),
        error=None,
        timings=Timings(queued_ms=0.0, inference_ms=0.0),
    )


def test_a_line_stays_one_line_for_readers_that_split_on_every_unicode_break():
    body = encode_line(_line(BREAKS)) + b"\n" + encode_line(_line("second")) + b"\n"
    lines = body.decode().splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["output"]["text"] for line in lines] == [BREAKS, "second"]


def test_httpx_iter_lines_reads_one_result_per_line():
    body = encode_line(_line(BREAKS)) + b"\n" + encode_line(_line("second")) + b"\n"
    resp = httpx.Response(200, content=body)
    assert [json.loads(line)["output"]["text"] for line in resp.iter_lines()] == [BREAKS, "second"]
