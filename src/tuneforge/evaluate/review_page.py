"""The self-contained blind A/B review page (one HTML file: inline CSS, JS and data).

The page never names the runs: it shows "Response 1" and "Response 2", whose sides were
randomised per item at export time; only key.json (kept by whoever runs the review) maps
them back. Ratings live in the browser's localStorage while rating and are saved with
"Download ratings" as a JSON file that `tuneforge review import` reads.
"""

from __future__ import annotations

import html
import json

RATINGS_FORMAT = "tuneforge-review-ratings/1"

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2430}
header{position:sticky;top:0;background:#1d2430;color:#fff;padding:10px 20px;display:flex;gap:16px;align-items:center;z-index:1}
header h1{font-size:17px;margin:0;flex:1}
main{max-width:1100px;margin:0 auto;padding:16px}
.item{background:#fff;border-radius:8px;padding:14px 16px;margin:0 0 16px;box-shadow:0 1px 3px #0002}
.item.done{border-left:5px solid #2f9e44}
.prompt{font-weight:600;margin-bottom:10px;white-space:pre-wrap}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.resp{background:#f8f9fb;border:1px solid #dde1e7;border-radius:6px;padding:8px 10px;white-space:pre-wrap}
.resp h3{margin:0 0 6px;font-size:13px;color:#5b6472}
.choices{margin-top:10px;display:flex;gap:8px}
button{font:inherit;padding:5px 12px;border-radius:5px;border:1px solid #aab2bd;background:#fff;cursor:pointer}
button.on{background:#2f7ed8;border-color:#2f7ed8;color:#fff}
#save{background:#2f9e44;color:#fff;border-color:#2f9e44}
input{font:inherit;padding:4px 8px;border-radius:4px;border:1px solid #aab2bd}
"""

_JS = """
const D = JSON.parse(document.getElementById('review-data').textContent);
const KEY = 'tuneforge-review-' + D.review_id;
const state = JSON.parse(localStorage.getItem(KEY) || '{"rater":"","ratings":{}}');
const main = document.querySelector('main');
const LABELS = {left: '1 is better', tie: 'Tie', right: '2 is better'};
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }
function persist() { localStorage.setItem(KEY, JSON.stringify(state)); progress(); }
function progress() { const n = Object.keys(state.ratings).length;
  document.getElementById('progress').textContent = n + ' / ' + D.items.length + ' rated'; }
D.items.forEach((it, i) => {
  const box = el('section', 'item'); box.id = it.id;
  box.appendChild(el('div', 'prompt', (i + 1) + '. ' + it.prompt));
  const pair = el('div', 'pair');
  [['Response 1', it.left], ['Response 2', it.right]].forEach(([h, t]) => {
    const r = el('div', 'resp'); r.appendChild(el('h3', '', h)); r.appendChild(el('div', '', t)); pair.appendChild(r); });
  box.appendChild(pair);
  const ch = el('div', 'choices');
  Object.entries(LABELS).forEach(([v, label]) => {
    const b = el('button', '', label); b.dataset.v = v;
    b.onclick = () => { state.ratings[it.id] = v; paint(box, it.id); persist(); };
    ch.appendChild(b); });
  box.appendChild(ch); main.appendChild(box); paint(box, it.id);
});
function paint(box, id) { box.classList.toggle('done', id in state.ratings);
  box.querySelectorAll('button').forEach(b => b.classList.toggle('on', state.ratings[id] === b.dataset.v)); }
const rater = document.getElementById('rater'); rater.value = state.rater;
rater.oninput = () => { state.rater = rater.value; persist(); };
document.getElementById('save').onclick = () => {
  const out = {format: D.format, review_id: D.review_id, rater: state.rater, ratings: state.ratings,
               saved_at: new Date().toISOString()};
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify(out, null, 1)], {type: 'application/json'}));
  a.download = 'ratings-' + (state.rater || 'anonymous').replace(/[^A-Za-z0-9_-]/g, '_') + '.json';
  document.body.appendChild(a); a.click(); a.remove();
};
progress();
"""


def page_data(review_id: str, items: list[dict]) -> dict:
    """What the page embeds: ids, prompts and the two sides, nothing that names a run."""
    return {
        "format": RATINGS_FORMAT,
        "review_id": review_id,
        "items": [{"id": it["id"], "prompt": it["prompt"], "left": it["left"], "right": it["right"]} for it in items],
    }


def embed_json(obj: dict) -> str:
    """JSON that is safe inside <script>: '<' is escaped, so no '</script>' can close it early.

    >>> embed_json({"a": "</script>"})
    '{"a": "\\\\u003c/script>"}'
    """
    return json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c")


def render_page(title: str, review_id: str, items: list[dict]) -> str:
    """The whole review page as one HTML string."""
    data = embed_json(page_data(review_id, items))
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f'<header><h1>{html.escape(title)}</h1><span id="progress"></span>'
        f'<label>Your name <input id="rater" placeholder="rater"></label>'
        f'<button id="save">Download ratings</button></header>\n'
        f"<main><p>Which response answers the prompt better? Judge correctness first, then helpfulness "
        f"and clarity. The sides are shuffled; ratings are kept in this browser until you download them.</p></main>\n"
        f'<script id="review-data" type="application/json">{data}</script>\n<script>{_JS}</script>\n'
        f"</body></html>\n"
    )


def read_page_data(page: str) -> dict:
    """The data block of a rendered page (for tests and for re-reading an export)."""
    start = page.index('<script id="review-data" type="application/json">')
    start = page.index(">", start) + 1
    return json.loads(page[start : page.index("</script>", start)])
