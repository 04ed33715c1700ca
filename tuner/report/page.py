"""Assemble the report page: summary, interactive front, members table, images beside the baseline,
hypervolume over trials and parameter importances."""

from __future__ import annotations

import html

from tuner.report import figures
from tuner.report.html import (ERROR_HOOK, RENDER_CHECK, STYLE, export_command, held_out_text, member_section,
                               members_table)
from tuner.report.gallery import steps_text
from tuner.report.images import DIFF_VMAX, upscale_factor


def _div(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def summary_html(spec, front: dict, model_id: str) -> str:
    base = front["baseline"]
    cert = front.get("certification")
    cap = spec.constraints.max_fid_increase
    text = (f"model <b>{html.escape(str(model_id))}</b>; baseline {base['seconds_per_image'] * 1000:.2f} ms/image, "
            f"FID {base['fid']:.3f}; {front['n_finished']} finished trials, {front['n_feasible']} feasible, "
            f"{len(front['members'])} on the front; hypervolume {front['hypervolume']:.4f} (baseline-normalized)"
            + ("" if cap is None else f"; FID cap +{cap:g} % on the upper bound"))
    if cert:
        n = sum(v.get("status") == "feasible" for v in cert["trials"].values())
        text += (f"<br>certification on held-out seed {cert['seed']}: {n} certified feasible of "
                 f"{len(cert['trials'])} candidates, {cert['spent_images']} of {cert['budget_images']} images"
                 + (" (budget exhausted)" if cert.get("exhausted") else ""))
    shippable = [m for m in front["members"] if m.get("certified") == "feasible"]
    if shippable:  # the members are sorted by latency: the first certified one is the fastest
        m = shippable[0]
        text += (f'<br><b>fastest certified member: <a href="#member-{m["trial"]}">trial {m["trial"]}</a>, '
                 f'{m["objectives"].get("speedup", float("nan")):.2f}x</b> (its images and export command below)')
    return f'<p class="summary">{text}</p>'


def _member_title(m: dict) -> tuple[str, str]:
    o = m["objectives"]
    title = (f"trial {m['trial']}: {o.get('speedup', float('nan')):.2f}x, FID change "
             f"{o.get('fid_increase_pct', float('nan')):+.1f} % ({m.get('certified') or 'not certified'})")
    return title, figures.config_text(m["config"], "; ")


def gallery_html(gallery, front: dict, study_arg: str) -> str:
    f = upscale_factor(gallery.baseline.images.shape[-1])
    size = gallery.baseline.images.shape[-1]
    intro = (f"<p>The same {len(gallery.seeds)} seeds for the baseline and every front member, generated now by "
             f"applying each config ({gallery.steps} steps asked). {size}-px images shown x{f}, nearest neighbour "
             f"(each pixel a block). Difference maps: per-pixel |member - baseline|, black = identical, bright yellow "
             f"= {DIFF_VMAX:g} or more (same scale everywhere).</p>")
    b = gallery.baseline
    parts = [intro, member_section(gallery, "baseline", "baseline (no acceleration)",
                                   f"{steps_text(b.steps_run)} steps run; generated in {b.seconds:.2f} s here", None)]
    for m in front["members"]:
        row = gallery.rows[m["trial"]]
        title, config = _member_title(m)
        held = held_out_text(m)
        meta = (f"{html.escape(config)}<br>" + (f"held-out seeds: FID change {held}<br>" if held != "-" else "")
                + f"{steps_text(row.steps_run)} steps run; generated in {row.seconds:.2f} s here "
                f"(baseline {b.seconds:.2f} s; one call each: the speedup in the title is the study's measurement)")
        parts.append(member_section(gallery, m["trial"], title, meta, export_command(study_arg, m["trial"])))
    return "".join(parts)


def render(spec, study, front: dict, gallery, study_arg: str, model_id: str, history, importances, why_not) -> str:
    from plotly.offline import get_plotlyjs

    front_fig = figures.front_figure(study, front, spec.constraints.max_fid_increase)
    body = [f"<h1>tuner study report: {html.escape(spec.name)}</h1>", summary_html(spec, front, model_id),
            "<h2>Front</h2>", _div(front_fig, "front"),
            "<h2>Front members</h2>", members_table(front, study_arg),
            "<h2>Images beside the baseline</h2>", gallery_html(gallery, front, study_arg),
            "<h2>Hypervolume over trials</h2>", _div(figures.hypervolume_figure(history), "hypervolume"),
            "<h2>Parameter importances</h2>",
            _div(figures.importance_figure(importances), "importance") if importances
            else f"<p>{html.escape(why_not or 'not available')}</p>",
            '<div id="render-check" hidden></div>']
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>tuner report: {html.escape(spec.name)}'
            f"</title>{ERROR_HOOK}<script>{get_plotlyjs()}</script><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}{RENDER_CHECK}</body></html>")
