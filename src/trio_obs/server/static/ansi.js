// ANSI escape sequences in tool output: SGR colour codes become styled spans, everything
// else (cursor moves, erase, OSC titles and links) is dropped. Only text nodes and class
// names / style properties are produced: the chunk's text never becomes markup.

// CSI (ESC [ params intermediates final), OSC (ESC ] … BEL|ST), and other two-byte escapes.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]/g;

/** `s` without any escape sequence (for search and plain-text views). */
export function stripAnsi(s) {
  return s.includes("\x1b") ? s.replace(ESCAPES, "") : s;
}

const XTERM = [0, 95, 135, 175, 215, 255];

/** The CSS colour of xterm-256 colour `n` (16…255); 0…15 are classes instead. */
function color256(n) {
  if (n >= 232) {
    const g = 8 + 10 * (n - 232);
    return `rgb(${g},${g},${g})`;
  }
  const i = n - 16;
  return `rgb(${XTERM[Math.floor(i / 36)]},${XTERM[Math.floor(i / 6) % 6]},${XTERM[i % 6]})`;
}

function newStyle() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, under: false, inverse: false, strike: false };
}

/** Apply one SGR parameter list to `st` (mutated). */
function applySgr(st, params) {
  const p = params === "" ? [0] : params.split(";").map((x) => (x === "" ? 0 : Number(x)));
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === 0) Object.assign(st, newStyle());
    else if (c === 1) st.bold = true;
    else if (c === 2) st.dim = true;
    else if (c === 3) st.italic = true;
    else if (c === 4) st.under = true;
    else if (c === 7) st.inverse = true;
    else if (c === 9) st.strike = true;
    else if (c === 22) st.bold = st.dim = false;
    else if (c === 23) st.italic = false;
    else if (c === 24) st.under = false;
    else if (c === 27) st.inverse = false;
    else if (c === 29) st.strike = false;
    else if (c >= 30 && c <= 37) st.fg = c - 30;
    else if (c >= 90 && c <= 97) st.fg = c - 90 + 8;
    else if (c === 39) st.fg = null;
    else if (c >= 40 && c <= 47) st.bg = c - 40;
    else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
    else if (c === 49) st.bg = null;
    else if (c === 38 || c === 48) {
      let value = null;
      if (p[i + 1] === 5 && i + 2 < p.length) {
        const n = p[i + 2] & 255;
        value = n < 16 ? n : color256(n);
        i += 2;
      } else if (p[i + 1] === 2 && i + 4 < p.length) {
        value = `rgb(${p[i + 2] & 255},${p[i + 3] & 255},${p[i + 4] & 255})`;
        i += 4;
      } else {
        i = p.length; // malformed: ignore the rest
      }
      if (c === 38) st.fg = value;
      else st.bg = value;
    }
  }
}

function styledSpan(st, str) {
  const span = document.createElement("span");
  const cls = [];
  let { fg, bg } = st;
  if (st.inverse) [fg, bg] = [bg ?? "inv-fg", fg ?? "inv-bg"];
  if (typeof fg === "number") cls.push(`a-f${fg}`);
  else if (fg === "inv-fg") cls.push("a-finv");
  else if (fg) span.style.color = fg;
  if (typeof bg === "number") cls.push(`a-b${bg}`);
  else if (bg === "inv-bg") cls.push("a-binv");
  else if (bg) span.style.backgroundColor = bg;
  if (st.bold) cls.push("a-bold");
  if (st.dim) cls.push("a-dim");
  if (st.italic) cls.push("a-it");
  if (st.under) cls.push("a-un");
  if (st.strike) cls.push("a-st");
  span.className = cls.join(" ");
  span.append(str); // a text node
  return span;
}

const plain = (st) =>
  st.fg === null && st.bg === null && !st.bold && !st.dim && !st.italic && !st.under &&
  !st.inverse && !st.strike;

/**
 * Append `s` to `parent` with its SGR styling as spans; `state` carries the style across
 * chunks of one output stream (pass the same object for consecutive chunks).
 */
export function appendAnsi(parent, s, state = newStyle()) {
  if (!s.includes("\x1b")) {
    parent.append(plain(state) ? s : styledSpan(state, s));
    return state;
  }
  let last = 0;
  ESCAPES.lastIndex = 0;
  for (let m = ESCAPES.exec(s); m !== null; m = ESCAPES.exec(s)) {
    if (m.index > last) {
      const piece = s.slice(last, m.index);
      parent.append(plain(state) ? piece : styledSpan(state, piece));
    }
    const seq = m[0];
    if (seq.endsWith("m") && seq[1] === "[") applySgr(state, seq.slice(2, -1));
    last = ESCAPES.lastIndex;
  }
  if (last < s.length) {
    const piece = s.slice(last);
    parent.append(plain(state) ? piece : styledSpan(state, piece));
  }
  return state;
}

export const ansiState = newStyle;
