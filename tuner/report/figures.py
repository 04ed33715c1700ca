"""The report's interactive figures (plotly; the page inlines plotly.js, so they work offline): the front,
hypervolume over trials, and parameter importances."""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

TOP_PARAMS = 15
CERTIFIED_COLOUR, UNCERTIFIED_COLOUR, OTHER_COLOUR = "#1a9850", "#f46d43", "#bdbdbd"


def config_text(methods: dict, sep: str = "<br>") -> str:
    """A stored methods table as short lines for hover text and tables: `tome(ratio=0.5)`."""
    def short(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, dict)) and len(v) > 6:
            return f"[{len(v)} items]"
        return v

    parts = [f"{k}({', '.join(f'{a}={short(b)}' for a, b in v.items())})" for k, v in (methods or {}).items()]
    return sep.join(parts) or "baseline (no method)"


def _num(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _errors(points: list[dict], key: str, lo: str, hi: str) -> dict:
    """Asymmetric plotly error bars from stored interval bounds (missing bounds: no bar)."""
    plus = [(_num(p.get(hi)) - p[key]) if _num(p.get(hi)) is not None else 0 for p in points]
    minus = [(p[key] - _num(p.get(lo))) if _num(p.get(lo)) is not None else 0 for p in points]
    return dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=1, width=3)


def _trace(points: list[dict], name: str, colour: str, meta: str, size: int, symbol: str = "circle",
           bars: bool = True):
    """`bars`: intervals as error bars (the front's); other trials keep theirs in the hover text, where their
    often +-100 % FID intervals do not cross the whole plot."""
    import plotly.graph_objects as go

    no_bars = dict(visible=False)
    return go.Scatter(
        x=[p["fid_increase_pct"] for p in points], y=[p["speedup"] for p in points], mode="markers", name=name,
        meta=meta, marker=dict(color=colour, size=size, symbol=symbol, line=dict(width=1, color="#333")),
        error_x=_errors(points, "fid_increase_pct", "fid_increase_pct_lo", "fid_increase_pct_hi") if bars else no_bars,
        error_y=_errors(points, "speedup", "speedup_lo", "speedup_hi") if bars else no_bars,
        customdata=[[p["trial"]] for p in points], hovertext=[p["hover"] for p in points], hoverinfo="text")


def _point(trial: int, attrs: dict, methods: dict, status: str | None) -> dict | None:
    if _num(attrs.get("speedup")) is None or _num(attrs.get("fid_increase_pct")) is None:
        return None
    hover = (f"<b>trial {trial}</b> ({status or 'not a certification candidate'})<br>"
             f"speedup {attrs['speedup']:.2f}x, FID change {attrs['fid_increase_pct']:+.1f} %"
             + (f" [{attrs['fid_increase_pct_lo']:+.1f}, {attrs['fid_increase_pct_hi']:+.1f}]"
                if _num(attrs.get("fid_increase_pct_hi")) is not None and _num(attrs.get("fid_increase_pct_lo")) is not None
                else "") + f"<br>{config_text(methods)}")
    keys = ("speedup", "speedup_lo", "speedup_hi", "fid_increase_pct", "fid_increase_pct_lo", "fid_increase_pct_hi")
    return {"trial": trial, "hover": hover, **{k: attrs.get(k) for k in keys}}


def front_figure(study: optuna.Study, front: dict, cap: float | None):
    """Speedup against FID change %, with intervals; front members certified (green) or not (orange),
    the other completed trials grey; the cap as a dashed line. Trace `meta` names each trace's role."""
    import plotly.graph_objects as go

    on_front = {m["trial"] for m in front["members"]}
    statuses = {int(k): v.get("status") for k, v in ((front.get("certification") or {}).get("trials") or {}).items()}
    others = [_point(t.number, t.user_attrs, t.user_attrs.get("config"), statuses.get(t.number))
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number not in on_front]
    members = [(m, _point(m["trial"], m["objectives"], m["config"], m.get("certified"))) for m in front["members"]]
    certified = [p for m, p in members if p and m.get("certified") == "feasible"]
    uncertified = [p for m, p in members if p and m.get("certified") != "feasible"]
    fig = go.Figure()
    fig.add_trace(_trace([p for p in others if p], "other completed trials", OTHER_COLOUR, "other", 7, bars=False))
    fig.add_trace(_trace(uncertified, "front, not certified", UNCERTIFIED_COLOUR, "front", 13))
    fig.add_trace(_trace(certified, "front, certified feasible", CERTIFIED_COLOUR, "front", 15, "diamond"))
    fig.add_trace(go.Scatter(x=[0.0], y=[1.0], mode="markers", name="baseline", meta="baseline", hoverinfo="text",
                             hovertext=["baseline: 1.00x, FID change 0 %"],
                             marker=dict(color="black", size=12, symbol="star")))
    if cap is not None:
        fig.add_vline(x=cap, line_dash="dash", line_color="#d73027",
                      annotation_text=f"cap +{cap:g} %", annotation_position="top right")
    _focus_x(fig, [p for p in others if p] + [p for _, p in members if p], cap)
    fig.update_layout(title="Front: speedup against FID change (intervals as error bars; hover for the config)",
                      xaxis_title="FID change % (lower is better)", yaxis_title="speedup (x, higher is better)",
                      height=520, margin=dict(l=60, r=20, t=60, b=50), legend=dict(orientation="h", y=-0.15),
                      template="plotly_white")
    return fig


def _focus_x(fig, points: list[dict], cap: float | None) -> None:
    """Start zoomed on what decides the choice (around the cap and the front); a far outlier (+500 %) would
    squeeze every useful point into one pixel column. The modebar's autoscale shows everything."""
    span = 4 * (cap if cap else 25.0)
    xs = [p["fid_increase_pct"] for p in points]
    inside = [x for x in xs if -span <= x <= span]
    if len(inside) == len(xs):
        return
    hi = max([span / 2, *inside]) * 1.1
    lo = min([-span / 4, *inside]) * 1.1
    fig.update_xaxes(range=[lo, hi])
    fig.add_annotation(text=f"{len(xs) - len(inside)} trial(s) beyond this range: autoscale (modebar) shows them",
                       xref="paper", yref="paper", x=1, y=1.06, showarrow=False, font=dict(size=11, color="#666"))


def hypervolume_figure(history: list[tuple[int, float]]):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[n for n, _ in history], y=[h for _, h in history], mode="lines+markers",
                               line_shape="hv", name="hypervolume", meta="hypervolume"))
    fig.update_layout(title="Hypervolume of the front after each trial (baseline-normalized)",
                      xaxis_title="trial", yaxis_title="hypervolume", height=360, template="plotly_white",
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


def importance_figure(importances: dict[str, dict[str, float]]):
    """{objective: {param: importance}} as grouped horizontal bars."""
    import plotly.graph_objects as go

    total = {}
    for imp in importances.values():
        for p, v in imp.items():
            total[p] = total.get(p, 0.0) + v
    # the TOP_PARAMS that matter most, the largest on top; parameters with no measurable effect are left out
    params = sorted((p for p in total if total[p] >= 0.005), key=lambda p: total[p])[-TOP_PARAMS:]
    fig = go.Figure([go.Bar(y=params, x=[imp.get(p, 0.0) for p in params], orientation="h", name=name, meta="importance")
                     for name, imp in importances.items()])
    fig.update_layout(title="Parameter importances (Optuna's evaluator, per objective)", barmode="group",
                      xaxis_title="importance", height=max(300, 90 + 22 * len(params) * max(1, len(importances))),
                      template="plotly_white", margin=dict(l=200, r=20, t=60, b=50))
    return fig
