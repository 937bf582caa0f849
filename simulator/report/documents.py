"""Planner documents: plan.json, report.md and a self-contained report.html (images inlined as
base64, readable offline), written into a folder as a whole or not at all.

The report is built once as a list of sections (text, tables, figures) and rendered twice, to
Markdown (figures as files next to it) and to HTML (figures inlined).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from .jsonsafe import clean, dumps  # noqa: E402,F401  (re-exported)
from .plots import quadrant_breakdown  # noqa: E402


# ---------------------------------------------------------------------------------------------
def _ms(x) -> str:
    from ..units import format_ms

    return "n/a" if x is None or not math.isfinite(x) else format_ms(x)


def _usd(x, digits=2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"${x:,.{digits}f}"


def _lat(c: dict, key: str):
    v = c.get("verified") or {}
    if v.get(key) is not None:
        return v[key]
    return (c.get("analytic") or {}).get(key)


def _slo_lines(ax, value, orient="h"):
    if value is not None and math.isfinite(value):
        (ax.axhline if orient == "h" else ax.axvline)(value * 1e3, color="r", ls="--", lw=1.2, label="SLO")


def fig_pareto(doc: dict, path: Path) -> Path | None:
    """Cost against latency, one point per priced candidate; None (no figure) when none is priced."""
    cands = [c for c in doc["candidates"] if c.get("cost_per_hour_usd") is not None]
    if not cands:
        return None
    rec = doc.get("recommended")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, name, lim in ((axes[0], "ttft_p_s", "TTFT", doc["slo"]["ttft_s"]),
                               (axes[1], "tpot_p_s", "TPOT", doc["slo"]["tpot_s"])):
        # each panel marks a simulated miss by its own latency: a fleet that missed only the other SLO (or was
        # rejecting requests) is not drawn as missing this one
        for group, style in (("analytic only (screening estimate)", dict(marker="o", facecolors="none",
                                                                         edgecolors="grey")),
                             ("simulated, SLOs met", dict(marker="o", color="tab:green")),
                             (f"simulated, missed the {name} SLO", dict(marker="x", color="tab:red")),
                             ("simulated, missed another SLO", dict(marker="^", facecolors="none",
                                                                     edgecolors="tab:orange"))):
            pts = []
            for c in cands:
                v = c.get("verified")
                here = _lat(c, key)
                g = ("analytic only (screening estimate)" if not v else "simulated, SLOs met" if v["slo_met"]
                     else f"simulated, missed the {name} SLO" if here is not None and lim is not None and here > lim
                     else "simulated, missed another SLO")
                y = _lat(c, key)
                if g == group and y is not None:
                    pts.append((c["cost_per_hour_usd"], y * 1e3))
            if pts:
                x, y = zip(*pts)
                ax.scatter(x, y, s=36, label=group, **style)
        if rec and _lat(rec, key) is not None and rec.get("cost_per_hour_usd") is not None:
            ax.scatter([rec["cost_per_hour_usd"]], [_lat(rec, key) * 1e3], s=180, marker="*", color="gold",
                       edgecolor="k", zorder=5, label="recommended")
        for c in cands:  # the simulated ones by their table id (two fleets at one price are then told apart)
            if c.get("verified") and _lat(c, key) is not None:
                ax.annotate(c["id"], (c["cost_per_hour_usd"], _lat(c, key) * 1e3), textcoords="offset points",
                            xytext=(5, 4), fontsize=7)
        _slo_lines(ax, lim)
        ax.set_xlabel("fleet cost (USD per hour)")
        ax.set_ylabel(f"p{doc['slo']['percentile']:g} {name} (ms)")
        ax.set_title(f"Cost vs p{doc['slo']['percentile']:g} {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _of(k: int, n: int) -> str:
    """A figure title's note that it draws only ``k`` of the ``n`` candidates it could (nothing when all)."""
    return f" ({k} of {n} shown)" if k < n else ""


def fig_cdfs(doc: dict, samples: dict, path: Path, max_lines: int = 4) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    shown = [c for c in doc["candidates"] if samples.get(c["id"])]
    rec = doc.get("recommended")
    if rec:
        shown = [c for c in shown if c["id"] == rec["id"]] + [c for c in shown if c["id"] != rec["id"]]
    note = _of(min(len(shown), max_lines), len(shown))
    for c in shown[:max_lines]:
        for ax, key in zip(axes, ("ttft_s", "tpot_s")):
            v = np.sort(np.asarray(samples[c["id"]].get(key, []), dtype=float))
            if len(v):
                lw = 2.2 if rec and c["id"] == rec["id"] else 1.0
                ax.plot(v * 1e3, np.arange(1, len(v) + 1) / len(v), lw=lw, label=f"{c['id']} ({c['mode']})")
    for ax, name, lim in zip(axes, ("TTFT", "TPOT"), (doc["slo"]["ttft_s"], doc["slo"]["tpot_s"])):
        _slo_lines(ax, lim, "v")
        ax.axhline(doc["slo"]["percentile"] / 100, color="grey", ls=":", lw=1)
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{name} distribution at {doc['inputs']['rate_per_s']:g} req/s (simulated){note}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def fig_load(doc: dict, path: Path, band: float | None, max_lines: int = 4) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    rec = doc.get("recommended")
    cands = [c for c in doc["candidates"] if c.get("verified") and c["verified"].get("load_trace")]
    if rec:
        cands = [c for c in cands if c["id"] == rec["id"]] + [c for c in cands if c["id"] != rec["id"]]
    note = _of(min(len(cands), max_lines), len(cands))
    cands = cands[:max_lines]
    for c in cands:
        tr = c["verified"]["load_trace"]
        x = np.array([t["rate_per_s"] for t in tr])
        is_rec = bool(rec and c["id"] == rec["id"])
        for ax, key in zip(axes, ("ttft_p_s", "tpot_p_s")):
            y = np.array([t[key] if t[key] is not None else np.nan for t in tr]) * 1e3
            ax.plot(x, y, "o-", lw=2.2 if is_rec else 1.0, label=f"{c['id']} ({c['mode']})")
            if is_rec and band:
                ax.fill_between(x, y * (1 - band), y * (1 + band), alpha=0.15, label=f"±{band:.0%} error band")
            knee = c["verified"].get("max_rate_per_s")
            if is_rec and knee:
                # unbounded: nothing broke up to the highest rate tried, a lower bound, not a knee
                label = (f"knee {knee:.3g}/s" if c["verified"].get("max_rate_bounded", True)
                         else f"≥ {knee:.3g}/s (no SLO broke)")
                ax.axvline(knee, color="k", ls=":", lw=1)
                ax.annotate(label, (knee, np.nanmax(y) if np.isfinite(y).any() else 0),
                            fontsize=8, xytext=(4, -10), textcoords="offset points")
    for ax, name, lim in zip(axes, ("TTFT", "TPOT"), (doc["slo"]["ttft_s"], doc["slo"]["tpot_s"])):
        _slo_lines(ax, lim)
        ax.axvline(doc["inputs"]["rate_per_s"], color="tab:blue", ls="--", lw=0.8, label="target rate")
        ax.set_xlabel("offered load (requests per second)")
        ax.set_ylabel(f"p{doc['slo']['percentile']:g} {name} (ms)")
        ax.set_yscale("log")
        # milliseconds as plain numbers (40, 60, 1,000), not a log axis's 4 x 10^1; the in-between ticks are
        # named only where the axis spans less than a decade (else they would crowd)
        plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 10 else f"{v:.3g}")
        lo, hi = ax.get_ylim()
        ax.yaxis.set_major_formatter(plain)
        # under two decades (one major label at most, e.g. 8-90 ms shows only "10") the 2x and 5x ticks are named
        two_five = matplotlib.ticker.FuncFormatter(
            lambda v, _pos, f=plain: f(v, _pos) if round(v / 10 ** np.floor(np.log10(v) + 1e-9)) in (2, 5) else "")
        ax.yaxis.set_minor_formatter(plain if lo > 0 and hi / lo < 10 else two_five if lo > 0 and hi / lo < 100
                                     else matplotlib.ticker.NullFormatter())
        ax.set_title(f"p{doc['slo']['percentile']:g} {name} vs offered load (simulated){note}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def fig_pool_costs(doc: dict, path: Path, n: int = 8) -> Path | None:
    """Each candidate's cost per hour, stacked by pool: a plan's cheapest ``n`` (of those priced) from left to right,
    a comparison's deployments in the order given, as its table lists them; None (no figure) when none is priced."""
    plan = bool(doc["inputs"].get("modes"))
    priced = [c for c in doc["candidates"] if c.get("cost_per_hour_usd") is not None]
    cands = (sorted(priced, key=lambda c: c["cost_per_hour_usd"]) if plan else priced)[:n]  # (stable: ties keep order)
    if not cands:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.2))
    colours = {"colocated": "#4c72b0", "prefill": "#55a868", "decode": "#c44e52"}
    seen = set()
    for i, c in enumerate(cands):
        bottom = 0.0
        for p in c["pools"]:
            v = p.get("cost_per_hour_usd") or 0.0
            lab = p["role"] if p["role"] not in seen else None
            seen.add(p["role"])
            ax.bar(i, v, bottom=bottom, color=colours.get(p["role"], "grey"), label=lab)
            bottom += v
    ax.set_xticks(range(len(cands)), [c["id"] for c in cands])
    ax.set_xlabel(f"{'candidate' if plan else 'deployment'} (id in the table)")  # (categorical: a bar a fleet)
    ax.set_ylabel("USD per hour")
    ax.set_title(f"Cost per pool ({'candidates, cheapest first' if plan else 'deployments, in the order given'})"
                 f"{_of(len(cands), len(doc['candidates']))}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
PLAN_ROWS = 12  # a plan's table lists its first (cheapest) candidates; a comparison's lists every deployment


def candidate_rows(doc: dict, n: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The candidates table: the first ``n`` candidates (None: a plan's first PLAN_ROWS, every deployment of a
    comparison)."""
    head = ["id", "arrangement", "devices", "$/h", "$/M out tok", "analytic TTFT / TPOT", "DES TTFT / TPOT",
            "SLO met", "max rate (req/s)"]
    if n is None:
        n = PLAN_ROWS if doc["inputs"].get("modes") else len(doc["candidates"])
    rows = []
    for c in doc["candidates"][:n]:
        a, v = c.get("analytic") or {}, c.get("verified")
        rows.append([c["id"], c["arrangement"], str(c["devices"]), _usd(c.get("cost_per_hour_usd")),
                     _usd(c.get("usd_per_mtok_output"), 3),
                     f"{_ms(a.get('ttft_p_s'))} / {_ms(a.get('tpot_p_s'))}" if a else "-",
                     f"{_ms(v.get('ttft_p_s'))} / {_ms(v.get('tpot_p_s'))}" if v else "not simulated",
                     ("yes" if v["slo_met"] else _why_not(v)) if v else "-",
                     _max_rate_cell(v, doc["inputs"].get("rate_per_s")) if v else "-"])
    if not any(c.get("analytic") for c in doc["candidates"][:n]):  # a comparison: no screen, so no analytic column
        i = head.index("analytic TTFT / TPOT")
        head = head[:i] + head[i + 1:]
        rows = [r[:i] + r[i + 1:] for r in rows]
    return head, rows


def _max_rate_cell(v: dict, target: float | None) -> str:
    """The maximum sustainable rate: "N+" when nothing broke up to it; "< R" when none was found: every rate the
    search tried missed (R: the lowest of them), or a confirmation run missed at the target rate itself (no
    maximum was searched below it); "-" for a fleet that cannot run."""
    if v.get("error"):
        return "-"
    top = v.get("max_rate_per_s")
    if top is None:
        below = min((x for x in (v.get("lowest_rate_tried_per_s"), target) if x is not None), default=None)
        return f"< {below:.3g}" if below is not None else "-"
    return f"{top:.3g}{'' if v.get('max_rate_bounded', True) else '+'}"


def _why_not(v: dict) -> str:
    """"no" and, shortly, what broke: rejected requests (the first reason), which latency, or an error."""
    missed = v.get("missed") or []
    short = []
    for m in missed:
        second = m.startswith("on a confirmation run")
        if second:
            m = m.split("): ", 1)[-1]
        if "rejected" in m:
            short.append(m.split(" (", 1)[0].replace(" requests", "").replace(" of ", "/"))
        elif " TTFT " in m or " TPOT " in m:
            short.append(m.split(" ")[1])
        if second and short:
            short[-1] += " on 2nd run"
    if v.get("error"):
        short = ["cannot run"]
    return "no" + (f" ({', '.join(short)})" if short else "")


def rows_note(doc: dict, rows: list) -> str:
    """What a truncated candidates table leaves out ("" when it lists every candidate)."""
    n = len(doc["candidates"])
    return (f"The table lists the first {len(rows)} of {n} candidates (cheapest first); plan.json lists all."
            if len(rows) < n else "")


def recommendation_text(doc: dict) -> str:
    rec, slo, inp = doc.get("recommended"), doc["slo"], doc["inputs"]
    from ..units import format_slo_targets

    p = f"p{slo['percentile']:g}"
    target = (f"{inp['rate_per_s']:g} requests/s under "
              f"{format_slo_targets(slo['percentile'], slo['ttft_s'], slo['tpot_s'])}")
    if not rec:
        return f"No candidate met {target} in the simulation."
    v = rec["verified"]
    pools = "; ".join(
        f"{pool_label(p_)}: {p_['replicas']} x {_attention_devices(p_)} "
        f"{p_['hardware']}" + (f" + FFN on {p_['ffn_pool']['devices_per_replica']} {p_['ffn_pool']['hardware']}"
                               if p_.get("ffn_pool") else "")
        + f" ({_parallelism(p_['parallelism'])}, {p_['precision']['attention']}/{p_['precision']['ffn']})"
        for p_ in rec["pools"])
    own = rec.get("cost_per_hour_usd")
    priced = [c for c in doc["candidates"] if c.get("cost_per_hour_usd") is not None and c["id"] != rec["id"]
              and c.get("verified")] if own is not None else []  # (an unpriced recommendation: no ordering)
    cheaper = [c for c in priced if c["cost_per_hour_usd"] < own]
    same = [c for c in priced if c["cost_per_hour_usd"] == own and not c["verified"]["slo_met"]]
    head = rec.get("headroom")
    bounded = v.get("max_rate_bounded", True)  # False: the maximum is a lower bound (nothing broke up to it)
    text = (f"For {target}, "
            + ("the cheapest arrangement the discrete-event simulation shows meeting the SLOs is " if own is not None
               else "no arrangement the discrete-event simulation shows meeting the SLOs has a price; the first given "
               "is ")
            + f"**{rec['id']} ({rec['mode']})** - {pools} - {rec['devices']} device"
            f"{'s' if rec['devices'] != 1 else ''} "
            + (f"at {_usd(own)}/h ({_usd(rec.get('usd_per_mtok_output'), 3)} per million output tokens)"
               if own is not None else "with no price (pass --price)")
            + f". Simulated {p} TTFT {_ms(v['ttft_p_s'])}, TPOT {_ms(v['tpot_p_s'])}; "
            + (f"it sustains up to {v['max_rate_per_s']:.3g} req/s before an SLO breaks"
               + (f", a headroom of {head:+.0%} over the target rate" if head is not None else "")
               if bounded else
               f"it sustains at least {v['max_rate_per_s']:.3g} req/s (the highest rate simulated; no SLO broke)"
               + (f", a headroom of at least {head:+.0%} over the target rate" if head is not None else ""))
            + (f"; a second run (seed {cf['seed']}, {cf['requests_simulated']:,} requests) confirms it: {p} TTFT "
               f"{_ms(cf['ttft_p_s'])}, TPOT {_ms(cf['tpot_p_s'])}" if (cf := v.get("confirmation")) else "")
            + (_missed_text(len(cheaper), len(same)) if own is not None else "")
            + ".")
    tied = [c for c in priced if c["cost_per_hour_usd"] == own and c["verified"]["slo_met"]]
    return text + _tie_text(doc, rec, tied) + _headroom_caution(doc, rec, head)


def _missed_text(cheaper: int, same: int) -> str:
    """The recommendation's clause on the simulated candidates priced below it and at its price that missed the
    SLOs (". 2 cheaper candidates were simulated and missed the SLOs; 1 at the same price missed them too"); ""
    when there are none."""
    if cheaper:
        return (f". {cheaper} cheaper candidate{' was' if cheaper == 1 else 's were'} simulated and missed the SLOs"
                + (f"; {same} at the same price missed them too" if same else ""))
    if same:
        return (f". {same} candidate{'' if same == 1 else 's'} at the same price {'was' if same == 1 else 'were'} "
                "simulated and missed the SLOs")
    return ""


def _tie_text(doc: dict, rec: dict, tied: list[dict]) -> str:
    """How the recommendation was picked among the fleets that meet the SLOs at its price ("" when none ties it): a
    plan takes the first in the screen's order (at one price, the best analytic latency margin to the SLOs, then the
    fewest devices; ``screen.screen``), which its confirmation run then re-ran; a comparison, the first given."""
    if not tied:
        return ""
    ids = ", ".join(c["id"] for c in sorted([rec, *tied], key=lambda c: int(c["id"][1:])))
    if doc["inputs"].get("modes"):
        return (f" {len(tied) + 1} simulated fleets meet the SLOs at this price ({ids}). At one price the planner "
                f"takes the one the analytic screen ranked first: the larger margin to the SLO nearest its limit, "
                f"then to the other, then fewer devices; that is {rec['id']}, confirmed on a second run.")
    return (f" {len(tied) + 1} deployments meet the SLOs at this price ({ids}); ties go to the order they were "
            f"given, so {rec['id']}, the first, was picked.")


def _parallelism(par: dict) -> str:
    """A pool's layout as the recommendation names it: tp and ep always, attention dp, pp and expert tp where
    above 1, so the sizes account for the devices (2 x 4 devices read "tp 2, dp 2, ep 2, expert tp 2")."""
    parts = [f"tp {par['tp']}"] + [f"{name} {par[key]}" for key, name in (("dp", "dp"), ("pp", "pp"))
                                   if par.get(key, 1) > 1]
    parts.append(f"ep {par['ep']}")
    if par.get("expert_tp", 1) > 1:
        parts.append(f"expert tp {par['expert_tp']}")
    return ", ".join(parts)


def pool_label(pool: dict) -> str:
    """A pool as the report names it: its name with its role in brackets (``decode-long (decode)``), or its role
    alone where it has no other name (a plan's pools)."""
    name = pool.get("name")
    return f"{name} ({pool['role']})" if name and name != pool["role"] else pool["role"]


def _attention_devices(pool: dict) -> int:
    """A pool's devices per replica that hold its attention (with A/F disaggregation, those besides the FFN
    pool's, which the text names on their own)."""
    if pool.get("attention_devices_per_replica") is not None:
        return int(pool["attention_devices_per_replica"])
    per_replica = pool.get("devices_per_replica", pool["devices"] // max(pool["replicas"], 1))
    ffn = pool.get("ffn_pool")
    return int(per_replica - ffn["devices_per_replica"]) if ffn else int(per_replica)


def _upper_rate(v: dict) -> float | None:
    """The lowest simulated rate above the maximum found at which an SLO broke (the bisection's upper end)."""
    top = v.get("max_rate_per_s") or 0.0
    failed = [t["rate_per_s"] for t in v.get("load_trace") or [] if not t.get("slo_met") and t["rate_per_s"] > top]
    return min(failed) if failed else None


def _headroom_caution(doc: dict, rec: dict, head: float | None) -> str:
    """A warning when the recommendation's headroom is inside the timing model's median error: a fleet that close
    to its knee can miss the SLOs in production (and in a longer or reseeded simulation), so the cheapest
    simulated fleet with more headroom than that error is named. The bisection brackets the headroom; the
    caution gives the bracket."""
    band = (doc.get("error_band") or {}).get("median_ape")
    if head is None or band is None or head >= band:
        return ""
    rate = doc["inputs"]["rate_per_s"]
    hi = _upper_rate(rec.get("verified") or {})
    plan = bool(doc["inputs"].get("modes"))  # (a plan; else a comparison of given deployments)
    if hi is not None and hi / rate - 1 >= band:  # the bracket straddles the error: say so, and how to narrow it
        what = (f"the headroom lies between {head:+.0%} and {hi / rate - 1:+.0%} (the bisection's bracket; more "
                f"--bisect-steps narrow it), possibly inside the timing model's median error ({band:.0%})")
    else:
        least = "" if (rec.get("verified") or {}).get("max_rate_bounded", True) else "at least "
        what = (f"a headroom of {least}{head:+.0%}" + (f" to {hi / rate - 1:+.0%}" if hi is not None else "")
                + f" is inside the timing model's median error ({band:.0%})")
    safer = [c for c in doc["candidates"] if c.get("verified") and c["verified"].get("slo_met")
             and c.get("cost_per_hour_usd") is not None and c["id"] != rec["id"]
             and (c["verified"].get("max_rate_per_s") or 0.0) / rate - 1 >= band]
    alt = min(safer, key=lambda c: c["cost_per_hour_usd"]) if safer else None
    return (f" **Caution:** {what}: this fleet may run close to its knee and miss the SLOs in production"
            + (f"; {alt['id']} ({alt['arrangement']}) at {_usd(alt['cost_per_hour_usd'])}/h sustains "
               + ("" if alt["verified"].get("max_rate_bounded", True) else "at least ")
               + f"{alt['verified']['max_rate_per_s'] / rate - 1:+.0%}." if alt else
               "; no simulated candidate has more headroom than that"
               + (f"; to plan with a margin, plan for the rate plus it (--rate {rate * (1 + band):.3g})."
                  if plan else ".")))


def sections(doc: dict, figures: dict[str, str]) -> list[dict]:
    s = []
    s.append({"title": "Recommendation", "text": [recommendation_text(doc)]})
    head, rows = candidate_rows(doc)
    scr = doc.get("screening")
    txt = []
    if scr:
        txt.append(f"{scr['fleets_scored']:,} fleets scored analytically over {scr['layouts']:,} replica layouts; "
                   f"{scr['arrangements_within_tolerance']:,} distinct arrangements came within "
                   f"{scr['tolerance']:.0%} of the SLOs; {scr['simulated']} were simulated, cheapest first by the "
                   "screen's estimate" + (" (power at full load; a simulated fleet is then charged power at its "
                                          "measured load, which can reorder close ones)"
                                          if doc["inputs"].get("cost_basis") == "tco" else "") + ".")
    missed = [f"{c['id']} missed: " + "; ".join(c["verified"]["missed"]) + "."
              for c in doc["candidates"][:len(rows)] if c.get("verified") and c["verified"].get("missed")]
    inp = doc["inputs"]
    if inp.get("modes"):
        src = inp.get("slo_from") or {}
        txt.append(f"Searched: arrangements {', '.join(inp['modes'])} on {', '.join(inp.get('hardware', []))}, up to "
                   f"{inp.get('max_devices')} devices a fleet, precisions "
                   f"{inp.get('precisions') or 'as the model ships'}"
                   + (f"; SLOs from {', '.join(f'{k}: {v}' for k, v in src.items())}" if src else "") + ".")
    elif inp.get("slo_from"):
        txt.append("SLOs from " + ", ".join(f"{k}: {v}" for k, v in inp["slo_from"].items()) + ".")
    if rows_note(doc, rows):
        txt.append(rows_note(doc, rows))
    s.append({"title": "Top candidates", "text": txt, "table": (head, rows)})
    if missed:
        s.append({"title": "Why the simulated candidates above missed", "text": missed})
    no_price = "No candidate has a price (pass --price), so there is no cost figure."
    s.append({"title": "Cost vs latency", "figure": figures.get("pareto"),
              "text": ["Each point is a candidate fleet (simulated figures where available, else analytic); the "
                       "red dashed lines are the SLOs." if figures.get("pareto") else no_price]})
    rec = doc.get("recommended")
    util = ((rec or {}).get("verified") or {}).get("utilisation") or {}
    q = ("prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn")
    util_rows = [[pool, f"{u.get('busy', 0):.0%}", *(f"{u.get(k, 0):.0%}" for k in q), f"{u.get('other', 0):.0%}",
                  f"{u['batch_fill']:.0%}" if u.get("batch_fill") is not None else "-"] for pool, u in util.items()]
    if figures.get("breakdown") or util_rows:
        s.append({"title": "Where the recommendation spends its time", "figure": figures.get("breakdown"),
                  "text": ["Figure: per-quadrant time of one prefill (a mean-length prompt, whole) and one decode "
                           "step of the recommended arrangement (analytic, under the timing model named in the "
                           "assumptions; the decode batch is the "
                           "screen's expected batch for a plan, the pool's batch limit up to 64 for a comparison; "
                           "the figure's title gives both), split into "
                           "compute, memory, communication and fixed overhead. Table: share of simulated time each "
                           "pool had a step running (busy; a decode pool batching continuously is busy whenever it "
                           "holds a request, so read the load from the batch fill, the mean share of its sequence "
                           "slots in use) and, within it, each quadrant's share and the rest (engine overheads, "
                           "LM head, hand-offs), at the target rate."],
                  "table": (["pool", "busy", "prefill attention", "prefill FFN", "decode attention", "decode FFN",
                             "other", "batch fill"], util_rows)})
    s.append({"title": "Latency distributions", "figure": figures.get("cdfs"),
              "text": ["Simulated TTFT and TPOT at the target rate; red dashed: SLO; dotted: the SLO percentile."]})
    s.append({"title": "Latency vs offered load", "figure": figures.get("load"),
              "text": ["Simulated p-percentile latencies at the rates the bisection tried; the knee (dotted) is the "
                       "largest rate found meeting the SLOs (marked ≥ where no SLO broke up to the highest rate "
                       "tried: a lower bound)."]})
    pool_rows = []
    if rec:
        for p in rec["pools"]:
            pool_rows.append([pool_label(p), p["hardware"] + (f" + {p['ffn_pool']['hardware']} FFN"
                                                          if p.get("ffn_pool") else ""),
                              str(p["devices"]), _usd(p.get("cost_per_hour_usd")),
                              _usd(p.get("usd_per_mtok_input"), 3), _usd(p.get("usd_per_mtok_output"), 3)])
    if rec and len(rec["pools"]) > 1:
        pool_rows.append(["**fleet**", "", str(rec["devices"]), _usd(rec.get("cost_per_hour_usd")),
                          _usd(rec.get("usd_per_mtok_input"), 3), _usd(rec.get("usd_per_mtok_output"), 3)])
    colocated = any(p["role"] not in ("prefill", "decode") for p in (rec or {}).get("pools", []))
    s.append({"title": "Cost per pool", "figure": figures.get("pools"),
              "table": (["pool (recommended)", "hardware", "devices", "$/h", "$/M input tok", "$/M output tok"],
                        pool_rows),
              "text": ["Each pool's cost per million tokens is its own cost over the tokens it serves: a prefill "
                       "pool's over input tokens, a decode pool's over output tokens"
                       + (", a colocated pool's whole cost over both" if colocated else "")
                       + "; where requests are routed among pools of one role, each pool's over the share of those "
                       "tokens it served in the simulation (n/a: none); the fleet row charges the whole fleet to "
                       "each." + ("" if figures.get("pools") else " " + no_price)]})
    # (a comparison's rows name the deployments paying each price: one device may be priced differently in two)
    used_by = any(p.get("used_by") for p in doc.get("prices", []))
    price_rows = [[p["hardware"], _usd(p.get("usd_per_device_hour"), 3), p.get("source") or "", str(p.get("date")
                                                                                                   or ""),
                   f"{p['tdp_w']:.0f} W" if p.get("tdp_w") else "",
                   *([", ".join(p.get("used_by") or [])] if used_by else [])] for p in doc.get("prices", [])]
    rv = (rec or {}).get("verified") or {}
    sized = (f" (the recommendation's run: {rv['requests_simulated']:,} simulated, {rv['requests_measured']:,} "
             "measured)" if rv.get("requests_simulated") else "")
    assumptions = [
        f"Traffic: {inp.get('traffic')} at {inp['rate_per_s']:g} req/s; mean prompt {inp['isl_mean']:.0f} tokens, "
        f"mean output {inp['osl_mean']:.0f} tokens; at least {inp.get('requests_per_simulation')} requests per "
        "simulation, more where needed for the arrivals to span 4 request lifetimes at the SLOs; the requests "
        "arriving within one median simulated lifetime of the first and of the last arrival (batches filling and "
        f"draining) are not measured{sized}; seed {inp.get('seed')}"
        + (", and the recommendation is confirmed on a second run (the next seed, twice the arrival span)"
           if inp.get("modes") else "")
        + ". A fleet near its knee reads faster in a short run than in a long one: see the headroom.",
        "Cost basis: " + ("total cost of ownership (capex amortised + power at TDP x simulated utilisation x PUE + "
                          "hosting)" if inp.get("cost_basis") == "tco" else "rental price per device-hour") + ".",
        *(["Screening uses queueing approximations (Little's law for the decode batch, M/D/1 for prefill); only "
           "the simulation decides whether a candidate meets the SLOs."]
          if inp.get("modes") else []),  # (a comparison screens nothing: it simulates the deployments given)
        *([f"Every replica's KV cache holds the longest request the traffic draws ({inp['request_max_tokens']:,.0f} "
           "prompt + output tokens in the screening sample): a server rejects a request it cannot hold, and a fleet "
           "that rejects any misses the SLOs."] if inp.get("request_max_tokens") else []),
        timing_text(inp.get("timing")),
        *([f"Serving engine: {inp['engine']} (simulator/serving/engines.yaml): the simulation runs its batching "
           "policy, step overheads and frontend latency"
           + (f" ({_ms(inp['frontend_latency_s'])})" if inp.get("frontend_latency_s") is not None else "")
           + ("; the screen takes its own kernels and its frontend latency" if inp.get("modes") else "")
           + "."] if inp.get("engine") else []),
    ]
    if rec and doc.get("slo") and inp.get("modes"):  # a plan: its recommended.yaml, re-run at the planned targets
        from ..units import format_duration_arg

        slo = doc["slo"]
        timing = inp.get("timing")
        cmd = (f"quadrant simulate recommended.yaml --traffic {inp.get('traffic_ref') or inp.get('traffic')} "
               f"--rate {inp['rate_per_s']:g} "
               + (f"--ttft-slo {format_duration_arg(slo['ttft_s'])} " if slo.get("ttft_s") is not None else "")
               + (f"--tpot-slo {format_duration_arg(slo['tpot_s'])} " if slo.get("tpot_s") is not None else "")
               + f"--slo-percentile {slo['percentile']:g} --requests {rv.get('requests_simulated') or 2000}"
               + (f" --timing {timing}" if timing and timing != "roofline" else "")
               + (f" --engine {inp['engine']}" if inp.get("engine") else ""))
        assumptions.append(f"To re-run the recommendation, from this report's folder: `{cmd}` (recommended.yaml "
                           "carries the layout and prices, not the rate or SLOs; `simulate` summarises its whole run, "
                           "fill and drain included, so its percentiles differ somewhat from this steady window, and "
                           "its throughput, goodput and cost average over the drain too: its `sustained` line gives "
                           "them at the offered rate, as this report does).")
    s.append({"title": "Assumptions and prices", "text": assumptions,
              "table": (["hardware", "USD per device-hour", "source", "date", "TDP",
                         *(["used by"] if used_by else [])], price_rows)})
    eb = doc.get("error_band")
    if eb:
        s.append({"title": "Error band", "text": [
            f"Kernel-level validation of the shipped profiles ({eb['source']}): median absolute error "
            f"{eb['median_ape']:.0%}, p90 {eb['p90_ape']:.0%} over {eb['n']} measured kernels (bias, predicted/"
            f"measured: {eb['bias']:.2f}). Read every latency and cost here as uncertain by at least the median "
            f"error; the shaded band on the load plot shows ±{eb['median_ape']:.0%}. See reports/"
            "serving-validation.md for end-to-end comparisons."]})
    else:
        s.append({"title": "Error band", "text": [
            "No validation figures were found (simulator/validation/published_error.json; regenerate it with "
            "reports/scripts/validation_report.py)."]})
    return s


def timing_text(spec: str | None) -> str:
    """The report's sentence on the timing model a run used (its --timing spec; None: the roofline)."""
    from ..timing.calibrated import parse_timing_spec

    files = parse_timing_spec(spec or "roofline")
    cal, measured = files.get("calibrated"), files.get("measured")
    base = (f"the roofline with the efficiency constants calibrated in {', '.join(cal)}" if cal
            else "the analytic roofline with the profiles' cited efficiency constants (uncalibrated)")
    if measured:
        return (f"Timing: the kernel times measured in {', '.join(measured)} where that table covers a kernel, "
                f"else {base} (--timing {spec}).")
    return f"Timing: {base}" + (f" (--timing {spec})." if cal else ".")


def render_md(title: str, secs: list[dict]) -> str:
    out = [f"# {title}", ""]
    for sec in secs:
        out += [f"## {sec['title']}", ""]
        for t in sec.get("text", []):
            out += [t, ""]
        if sec.get("table") and sec["table"][1]:
            head, rows = sec["table"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
            out.append("")
        if sec.get("figure"):
            out += [f"![{sec['title']}](figures/{sec['figure']})", ""]
    return "\n".join(out)


def _inline_md(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, secs: list[dict], fig_dir: Path) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
           "th{background:#f3f3f3}img{max-width:100%}")
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
           f"<style>{css}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for sec in secs:
        out.append(f"<h2>{html.escape(sec['title'])}</h2>")
        for t in sec.get("text", []):
            out.append(f"<p>{_inline_md(t)}</p>")
        if sec.get("table") and sec["table"][1]:
            head, rows = sec["table"]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
        if sec.get("figure"):
            data = base64.b64encode((fig_dir / sec["figure"]).read_bytes()).decode("ascii")
            out.append(f"<img alt='{html.escape(sec['title'])}' src='data:image/png;base64,{data}'>")
    out.append("</body></html>")
    return "\n".join(out)


FIGURES = {"pareto": "pareto.png", "cdfs": "latency_cdf.png", "load": "latency_vs_load.png",
           "pools": "cost_per_pool.png", "breakdown": "breakdown.png"}  # what write_plan_dir may put in figures/
# what write_plan_dir writes (paths inside --out); a comparison writes no recommended.yaml, so it may not replace one
REPORT_FILES = ("plan.json", "report.md", "report.html", *(f"figures/{f}" for f in FIGURES.values()))
PLAN_FILES = (*REPORT_FILES, "recommended.yaml")


def breakdown_title(rows: list[dict]) -> str:
    """breakdown.png's title: what it times and the shape it was timed at, from the recommendation's per-quadrant
    rows ("... (one 512-token prefill, one decode step of 6 sequences)"; "1 sequence" at a batch of one)."""
    title = "Recommended arrangement: time per quadrant"
    if not rows or "decode_batch" not in rows[0]:
        return title
    batch = rows[0]["decode_batch"]
    return (f"{title} (one {rows[0]['prompt_tokens']:,}-token prefill, one decode step of {batch:,} "
            f"sequence{'' if batch == 1 else 's'})")


def write_plan_dir(out: Path, outcome, title: str, recommended_yaml: dict | None = None) -> list[Path]:
    """Write plan.json, recommended.yaml (if any), report.md, report.html and figures/ into ``out``,
    atomically (``io.atomic_dir``): everything goes to a temporary sibling folder that then takes the place
    of ``out``. An existing ``out`` must be a folder holding only those files (an earlier report's; a
    recommended.yaml only when this one writes one), so no other file is ever deleted; its parent folder must
    exist."""
    import pandas as pd
    import yaml

    from ..io import atomic_dir

    out = Path(out)
    rec_yaml = recommended_yaml if recommended_yaml is not None else outcome.recommended_yaml
    with atomic_dir(out, PLAN_FILES if rec_yaml else REPORT_FILES) as tmp:
        doc = clean(outcome.doc)
        (tmp / "plan.json").write_text(json.dumps(doc, indent=2, allow_nan=False))
        if rec_yaml:
            (tmp / "recommended.yaml").write_text(yaml.safe_dump(rec_yaml, sort_keys=False, width=110))
        figs = tmp / "figures"
        figs.mkdir()
        band = (outcome.error_band or {}).get("median_ape")
        drawn = {"pareto": fig_pareto(doc, figs / FIGURES["pareto"]),
                 "cdfs": fig_cdfs(doc, outcome.samples, figs / FIGURES["cdfs"]),
                 "load": fig_load(doc, figs / FIGURES["load"], band),
                 "pools": fig_pool_costs(doc, figs / FIGURES["pools"])}  # (None: nothing to draw, e.g. no prices)
        names = {k: FIGURES[k] for k, path in drawn.items() if path is not None}
        if outcome.breakdown:
            rows = [r for r in outcome.breakdown if r["quadrant"].endswith(("attention", "ffn"))]
            df = pd.DataFrame(rows).fillna(0.0)
            quadrant_breakdown(df.drop(columns=["decode_batch", "prompt_tokens"], errors="ignore"),
                               figs / FIGURES["breakdown"], breakdown_title(rows))
            names["breakdown"] = FIGURES["breakdown"]
        secs = sections(doc, names)
        (tmp / "report.md").write_text(render_md(title, secs))
        (tmp / "report.html").write_text(render_html(title, secs, figs))
    return sorted(p for p in out.rglob("*") if p.is_file())
