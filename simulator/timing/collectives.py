"""Alpha-beta costs of collectives on a two-level network (scale-up domain, scale-out fabric).

Per collective: latency = the scale-up link latency once (a switched domain runs small messages
as one-shot algorithms, a single hop) plus the scale-out latency x ceil(log2 domains) (tree across
domains); bandwidth = ring volume / (link bandwidth x achievable fraction). A group
larger than its scale-up domain is costed hierarchically: the intra-domain share on the scale-up
link plus the inter-domain share (message / domain) on the scale-out link.

``message_bytes`` is per device: the buffer for all-reduce, the gathered output for all-gather,
the bytes a device sends for all-to-all and point-to-point.
"""

from __future__ import annotations

import numpy as np

from ..ops.build import ALL_GATHER, ALL_REDUCE, ALL_TO_ALL, P2P


def _log2(x):
    return np.ceil(np.log2(np.maximum(x, 1.0)))


def collective_time_s(kind: np.ndarray, message_bytes, group, domain, up_bw, up_lat, out_bw, out_lat,
                      frac, *, ideal: bool = False) -> np.ndarray:
    """Vectorised time of collectives; ``ideal`` drops latency and efficiency (the pure bound)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _collective_time_s(kind, message_bytes, group, domain, up_bw, up_lat, out_bw, out_lat, frac, ideal)


def _collective_time_s(kind, message_bytes, group, domain, up_bw, up_lat, out_bw, out_lat, frac, ideal):
    kind = np.asarray(kind)[:, None] if np.ndim(kind) == 1 else np.asarray(kind)
    p = np.maximum(group, 1.0)
    d = np.clip(domain, 1.0, p)  # members of the group inside one scale-up domain
    nodes = np.ceil(p / d)
    f = 1.0 if ideal else frac
    bw_in, bw_out = up_bw * f, out_bw * f
    S = message_bytes
    lat_in = 0.0 if ideal else np.where(d > 1, up_lat, 0.0)
    lat_out = 0.0 if ideal else out_lat * _log2(nodes)

    # per-kind volume factors (ring algorithms)
    ar = 2 * (d - 1) / d * S / bw_in + 2 * (nodes - 1) / nodes * (S / d) / bw_out
    ag = (d - 1) / d * S / bw_in + (nodes - 1) / nodes * (S / d) / bw_out
    remote = np.where(p > 1, (p - d) / np.maximum(p - 1, 1.0), 0.0)
    a2a = np.maximum(S * (1 - remote) / bw_in, S * remote / bw_out)
    crosses = d < 2  # a point-to-point pair split over two domains
    p2p = np.where(crosses, S / bw_out + (0.0 if ideal else out_lat), S / bw_in + (0.0 if ideal else up_lat))
    t = np.select([kind == ALL_REDUCE, kind == ALL_GATHER, kind == ALL_TO_ALL, kind == P2P],
                  [ar + lat_in + lat_out, ag + lat_in + lat_out, a2a + lat_in + lat_out, p2p], 0.0)
    t = np.where((p <= 1) & (kind != P2P), 0.0, t)
    return np.where(S > 0, t, 0.0)
