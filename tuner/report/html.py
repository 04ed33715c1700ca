"""The study report as one self-contained HTML page: plotly.js, the figures' data and every image are
inline (no CDN, no side files), so it opens offline and can be mailed. A small script records JavaScript
errors and what the browser rendered into `#render-check`, which the browser test reads."""

from __future__ import annotations

import html
import json
import shlex

from tuner.report.figures import config_text
from tuner.report.images import difference_map, mean_abs_difference, png_data_uri, upscale, upscale_factor

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1400px;padding:0 16px;color:#222}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.summary{color:#444;line-height:1.5} table.members{border-collapse:collapse;font-size:14px;width:100%}
table.members th,table.members td{border-bottom:1px solid #eee;padding:6px 8px;text-align:left;vertical-align:top}
.feasible{color:#1a7f37;font-weight:600} .other{color:#b35900}
section.member{margin:18px 0 28px;padding:12px;border:1px solid #e3e3e3;border-radius:8px}
section.member h3{margin:0 0 6px} .meta{color:#555;font-size:14px;margin:2px 0 8px}
.strip{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start;margin:4px 0}
.rowlabel{width:110px;font-size:13px;color:#333;font-weight:600;padding-top:4px}
figure{margin:0;text-align:center} figcaption{font-size:11px;color:#555;max-width:140px;overflow-wrap:anywhere}
img.tile{image-rendering:pixelated;image-rendering:crisp-edges;display:block;max-width:256px;border:1px solid #ccc}
.cmd{display:flex;gap:6px;margin-top:8px} .cmd input{flex:1;font-family:ui-monospace,monospace;font-size:13px;padding:4px}
"""

ERROR_HOOK = """<script>window.__reportErrors=[];window.addEventListener('error',function(e){
window.__reportErrors.push(String(e.message||e));});var __ce=console.error;console.error=function(){
window.__reportErrors.push(Array.prototype.join.call(arguments,' '));__ce.apply(console,arguments);};</script>"""

RENDER_CHECK = """<script>window.addEventListener('load',function(){var c=document.getElementById('render-check');
try{var n=0;document.querySelectorAll('#front .scatterlayer .trace').forEach(function(el){
var cd=el.__data__,t=cd&&cd[0]&&cd[0].trace;if(t&&t.meta==='front')n+=el.querySelectorAll('path.point').length;});
c.dataset.frontPoints=n;c.dataset.plotted=document.querySelectorAll('.js-plotly-plot').length;
var imgs=document.querySelectorAll('img.tile');c.dataset.images=imgs.length;
c.dataset.imagesDecoded=Array.prototype.filter.call(imgs,function(i){return i.complete&&i.naturalWidth>0;}).length;
}catch(e){window.__reportErrors.push('render check: '+e);}
c.dataset.errors=JSON.stringify(window.__reportErrors);c.dataset.done='1';});</script>"""


def export_command(study_arg: str, trial: int) -> str:
    return f"tuner export {shlex.quote(study_arg)} --trial {trial} -o trial-{trial}.json"


def _interval(value, lo, hi, fmt: str, unit: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    text = format(value, fmt) + unit
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        text += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
    return text


def status_html(m: dict) -> str:
    status = m.get("certified")
    if status is None:
        return '<span class="other">not certified (not a candidate)</span>'
    return f'<span class="{"feasible" if status == "feasible" else "other"}">{html.escape(status)}</span>'


def held_out_text(m: dict) -> str:
    h = m.get("held_out")
    if not h:
        return "-"
    return (_interval(h.get("fid_increase_pct"), h.get("fid_increase_pct_lo"), h.get("fid_increase_pct_hi"), "+.1f", " %")
            + f" at {h.get('n_images')} held-out images, {h.get('speedup', float('nan')):.2f}x")


def members_table(front: dict, study_arg: str) -> str:
    rows = []
    for m in front["members"]:
        o = m["objectives"]
        rows.append(
            f"<tr data-trial=\"{m['trial']}\"><td><a href=\"#member-{m['trial']}\">{m['trial']}</a></td>"
            f"<td>{_interval(o.get('speedup'), o.get('speedup_lo'), o.get('speedup_hi'), '.2f', 'x')}</td>"
            f"<td>{_interval(o.get('fid_increase_pct'), o.get('fid_increase_pct_lo'), o.get('fid_increase_pct_hi'), '+.1f', ' %')}</td>"
            f"<td>{o.get('n_images', '-')}</td><td>{status_html(m)}</td><td>{held_out_text(m)}</td>"
            f"<td>{html.escape(config_text(m['config'], '; '))}</td>"
            f"<td><code>{html.escape(export_command(study_arg, m['trial']))}</code></td></tr>")
    head = ("<tr><th>trial</th><th>speedup [interval]</th><th>FID change % [interval]</th><th>images</th>"
            "<th>certified</th><th>held-out seeds</th><th>config</th><th>export</th></tr>")
    return f'<table class="members">{head}{"".join(rows)}</table>'


def _strip(label: str, tiles: list[tuple[str, str]], kind: str, trial) -> str:
    figs = "".join(f'<figure><img class="tile" data-kind="{kind}" data-trial="{trial}" src="{uri}" alt="{html.escape(cap)}">'
                   f"<figcaption>{html.escape(cap)}</figcaption></figure>" for uri, cap in tiles)
    return f'<div class="strip"><div class="rowlabel">{html.escape(label)}</div>{figs}</div>'


def member_section(gallery, key, title: str, meta: str, command: str | None) -> str:
    """Baseline row, this config's row and its difference row on the same seeds (the baseline alone: one row)."""
    f = upscale_factor(gallery.baseline.images.shape[-1])
    base = upscale(gallery.baseline.images, f)
    caps = [f"{gallery.caption(i)} · seed {s}" for i, s in enumerate(gallery.seeds)]
    parts = [f'<section class="member" id="member-{key}" data-trial="{key}"><h3>{html.escape(title)}</h3>'
             f'<p class="meta">{meta}</p>']
    if key == "baseline":
        parts.append(_strip("baseline", [(png_data_uri(x), c) for x, c in zip(base, caps)], "image", key))
    else:
        row = gallery.rows[key]
        parts.append(_strip("baseline", [(png_data_uri(x), c) for x, c in zip(base, caps)], "baseline", key))
        parts.append(_strip(f"trial {key}", [(png_data_uri(x), c) for x, c in zip(upscale(row.images, f), caps)],
                            "image", key))
        diffs = upscale(difference_map(row.images, gallery.baseline.images), f)
        means = mean_abs_difference(row.images, gallery.baseline.images)
        parts.append(_strip("|difference|", [(png_data_uri(x), f"mean |Δ| {d:.3f}") for x, d in zip(diffs, means)],
                            "diff", key))
    if command:
        parts.append(f'<div class="cmd"><input readonly value="{html.escape(command)}" onclick="this.select()">'
                     '<button onclick="var i=this.previousElementSibling;i.select();'
                     'if(navigator.clipboard){navigator.clipboard.writeText(i.value).catch(function(){});}">copy</button></div>')
    return "".join(parts) + "</section>"
