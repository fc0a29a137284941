// A virtualized list of fixed-height rows: only the rows in (and near) the viewport exist
// in the DOM, whatever the number of items. Row nodes are keyed, kept while their item
// stays in range, and refilled in place (never replaced) when their item's version changes,
// so a row under the pointer stays the same element. The scroll offset and the viewport's
// height are kept here (from scroll events, a ResizeObserver and what is set), so that a
// frame that changes rows never has to ask the browser for a layout before its own.

// Browsers cap an element's height (Chromium at about 33.5 million px).
const MAX_HEIGHT = 30_000_000;

export class VirtualList {
  /**
   * @param {HTMLElement} scroller the element that scrolls (overflow: auto)
   * @param {object} source count(): number of items; key(i): a stable key of item i;
   *   version(key): changes when the row must be refilled; fill(node, key, i): fill a row.
   */
  constructor(scroller, rowHeight, source, { overscan = 10, onRange = null } = {}) {
    this.scroller = scroller;
    this.h = rowHeight;
    this.source = source;
    this.overscan = overscan;
    this.onRange = onRange;
    this.sizer = document.createElement("div");
    this.sizer.className = "vsizer";
    this.sizer.setAttribute("role", "presentation");
    scroller.append(this.sizer);
    this.nodes = new Map(); // key -> row node
    this.height = -1;
    this.slack = 0; // px of blank space below the rows (to keep a row in place, see treeview)
    this.range = [0, -1]; // indices in the viewport (without overscan)
    this.vh = scroller.clientHeight; // viewport height, kept by a ResizeObserver
    this._top = null; // the scroll offset as last read or set (null: to be read)
    new ResizeObserver(() => {
      this.vh = scroller.clientHeight;
      this._top = null; // shown again, or resized: the browser may have moved it
    }).observe(scroller);
    scroller.addEventListener("scroll", () => {
      this._top = scroller.scrollTop; // the browser's layout is fresh in a scroll event
    }, { passive: true });
  }

  /** The scroll offset (read from the browser only when not known). */
  get top() {
    if (this._top === null) this._top = this.scroller.scrollTop;
    return this._top;
  }

  /** Scroll to `top` px; known at once when it is within the rows rendered last. */
  setTop(top) {
    const t = Math.max(0, top);
    if (Math.abs(this.top - t) >= 1) this.scroller.scrollTop = t;
    const max = this.height - (this.vh || this.scroller.clientHeight);
    this._top = t <= max ? t : null; // else the browser keeps it within the rows: asked
  }

  /** Number of rows that fit the viewport. */
  pageRows() {
    return Math.max(1, Math.floor((this.vh || this.scroller.clientHeight) / this.h));
  }

  /** The first index whose row is (at least partly) in the viewport. */
  firstVisible() {
    return Math.floor(this.top / this.h);
  }

  scrollToIndex(i, where = "center") {
    const vh = this.vh || this.scroller.clientHeight;
    let top = i * this.h;
    if (where === "center") top -= (vh - this.h) / 2;
    else if (where === "nearest") {
      const cur = this.top;
      if (top >= cur && top + this.h <= cur + vh) return;
      if (top > cur) top = top + this.h - vh;
    }
    this.scroller.scrollTop = Math.max(0, top);
    this._top = null; // the rows may not be rendered to that length yet: the browser says
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this._top = null;
  }

  atEnd(slack = 1.5) {
    const s = this.scroller;
    return s.scrollTop + s.clientHeight >= s.scrollHeight - this.h * slack;
  }

  /** Drop every row node (their contents are refilled on the next render). */
  reset() {
    for (const node of this.nodes.values()) node.remove();
    this.nodes.clear();
    this._top = null;
  }

  /** Render the rows in view; `toEnd`: scroll to the last row first (follow mode). */
  render(toEnd = false) {
    const { source, h } = this;
    const n = source.count();
    const height = Math.min(n * h + this.slack, MAX_HEIGHT);
    if (height !== this.height) {
      this.sizer.style.height = `${height}px`;
      this.height = height;
    }
    const vh = this.vh || this.scroller.clientHeight || 600;
    let top;
    if (toEnd) {
      // Computed, not read back: one layout per frame (the browser's), not two.
      top = Math.max(0, height - vh);
      if (Math.abs(this.top - top) >= 1) this.scroller.scrollTop = top;
      this._top = top;
    } else top = this.top;
    const firstIn = Math.floor(top / h);
    const lastIn = Math.min(n - 1, Math.ceil((top + vh) / h) - 1);
    const first = Math.max(0, firstIn - this.overscan);
    const last = Math.min(n - 1, lastIn + this.overscan);
    const keys = [];
    const wanted = new Set();
    for (let i = first; i <= last; i++) {
      const k = source.key(i);
      keys.push(k);
      wanted.add(k);
    }
    // Remove rows that left the range first, so that kept rows need no moving.
    for (const [k, node] of this.nodes) {
      if (!wanted.has(k)) {
        node.remove();
        this.nodes.delete(k);
      }
    }
    let prev = null;
    for (let j = 0; j < keys.length; j++) {
      const i = first + j;
      const k = keys[j];
      let node = this.nodes.get(k);
      if (!node) {
        node = document.createElement("div");
        node._ver = undefined;
        node._i = -1;
        this.nodes.set(k, node);
      }
      const ver = source.version(k);
      if (node._ver !== ver) {
        source.fill(node, k, i);
        node._ver = ver;
      }
      if (node._i !== i) {
        node.style.transform = `translateY(${i * h}px)`;
        node._i = i;
      }
      // Keep the DOM in list order (screen readers, tests); moves are rare (new rows only).
      const want = prev ? prev.nextSibling : this.sizer.firstChild;
      if (want !== node) this.sizer.insertBefore(node, want);
      prev = node;
    }
    this.range = [firstIn, lastIn];
    this.onRange?.(first, last, firstIn, lastIn);
  }
}
