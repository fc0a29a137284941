// The page around its parts: the element lookup, the URL's query (as the address bar shows
// it), the layout's media queries, and the drawers that hold the side bar and the panel on
// narrow screens.

import { schedule } from "./frame.js";

export const params = new URLSearchParams(location.search);
export const $ = (id) => document.getElementById(id);
export const wide = window.matchMedia("(min-width: 1200px)");
export const narrow = window.matchMedia("(max-width: 759px)");

export function writeUrl() {
  const q = params.toString();
  history.replaceState(null, "", q ? `?${q}` : location.pathname);
}

let drawer = null; // "side" | "panel" | null

export function setDrawer(which) {
  drawer = which;
  document.body.classList.toggle("drawer-side", which === "side");
  document.body.classList.toggle("drawer-panel", which === "panel");
  $("backdrop").hidden = which === null;
  $("open-list").setAttribute("aria-expanded", String(which === "side"));
  $("open-panel").setAttribute("aria-expanded", String(which === "panel"));
  schedule(true);
}

/** The buttons, keys and layout changes that open and close the drawers. */
export function initDrawers() {
  $("open-list").addEventListener("click", () => setDrawer(drawer === "side" ? null : "side"));
  $("close-list").addEventListener("click", () => setDrawer(null));
  $("open-panel").addEventListener("click", () => setDrawer(drawer === "panel" ? null : "panel"));
  $("close-panel").addEventListener("click", () => setDrawer(null));
  $("backdrop").addEventListener("click", () => setDrawer(null));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && drawer) setDrawer(null);
  });
  wide.addEventListener("change", () => setDrawer(null));
  narrow.addEventListener("change", () => setDrawer(null));
}
