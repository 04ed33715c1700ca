"""Read a report page with Python's HTML parser: its sections, image tiles, export commands, and the data
of its front figure (what the browser test also checks, rendered)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser


class ReportDom(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.sections: list[str] = []  # data-trial of each image section, in order
        self.tiles: list[dict] = []  # attributes of every <img class="tile">
        self.inputs: list[str] = []  # values of the export-command fields
        self.script_srcs: list[str] = []
        self.render_check: dict = {}
        self.feed(text)
        self.text = text

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "member" in (a.get("class") or ""):
            self.sections.append(a["data-trial"])
        elif tag == "img" and a.get("class") == "tile":
            self.tiles.append(a)
        elif tag == "input" and "readonly" in a:
            self.inputs.append(a.get("value"))
        elif tag == "script" and a.get("src"):
            self.script_srcs.append(a["src"])
        elif a.get("id") == "render-check":
            self.render_check = {k[5:]: v for k, v in a.items() if k.startswith("data-")}

    def tiles_of(self, trial, kind: str) -> list[dict]:
        return [t for t in self.tiles if t["data-trial"] == str(trial) and t["data-kind"] == kind]

    def figure_data(self, div_id: str) -> list[dict]:
        """The traces passed to Plotly.newPlot for the figure `div_id`."""
        m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', self.text)
        assert m, f"no figure {div_id}"
        data, _ = json.JSONDecoder().raw_decode(self.text, m.end())
        return data

    def front_points(self) -> int:
        return sum(len(t["x"]) for t in self.figure_data("front") if t.get("meta") == "front")
