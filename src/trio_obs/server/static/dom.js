// DOM helpers of the trio-obs viewer.
//
// Safety rule of the whole page: event data only ever reaches the DOM as text (text nodes,
// textContent, Node.data). Nothing uses innerHTML, insertAdjacentHTML or document.write.

/** An element with a class and children; strings become text nodes, never markup. */
export function el(tag, cls, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false && c !== "") {
      node.append(c instanceof Node ? c : String(c)); // a string is appended as a text node
    }
  }
  return node;
}

/** A text node whose text can be changed in place later (see setText). */
export const text = (s = "") => document.createTextNode(String(s));

/** Change a text node's text only when it differs (no layout work for equal values). */
export function setText(node, s) {
  const str = String(s);
  if (node.data !== str) node.data = str;
}

/** The node's only child as a text node (made if need be), to change with setText. */
export function textOf(node) {
  if (node.firstChild?.nodeType !== Node.TEXT_NODE || node.childNodes.length !== 1) {
    node.replaceChildren(text());
  }
  return node.firstChild;
}

/** Set an element's class only when it differs. */
export function setClass(node, cls) {
  if (node.className !== cls) node.className = cls;
}

/** 20000 -> "20,000" (toLocaleString is slow when called every frame). */
export function fmt(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  const s = String(Math.trunc(Math.abs(n)));
  let out = s.length > 3 ? s.replace(/\B(?=(\d{3})+(?!\d))/g, ",") : s;
  if (n < 0) out = `-${out}`;
  return out;
}

export function clock(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return "";
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function ago(ts) {
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function ms(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "";
  if (v >= 60000) return `${Math.floor(v / 60000)} min ${Math.round((v % 60000) / 1000)} s`;
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${+v.toFixed(1)} ms`;
}

export const pct = (r) => `${Math.round(r * 100)}%`;

export const badge = (label, cls = label) => el("span", `badge s-${cls}`, label);

/** A one-line preview of a JSON value, cut at `max` characters. */
export function preview(value, max = 140) {
  let s;
  try {
    s = JSON.stringify(value);
  } catch {
    s = String(value);
  }
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** Index of the first element of sorted `arr` that is >= `x`. */
export function lowerBound(arr, x) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
