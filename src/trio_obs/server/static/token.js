// The access token: taken from ?token= once, then kept in sessionStorage (never in the URL),
// and asked for with the token form when the server answers 401; the connection badge,
// which also says when a token is needed.

import { state } from "./state.js";
import { $, params, writeUrl } from "./page.js";

const TOKEN_KEY = "trio-obs.token";
const memoryStore = new Map(); // when sessionStorage is unavailable

function storeToken(value) {
  state.token = value;
  try {
    if (value === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    memoryStore.set(TOKEN_KEY, value);
  }
}

export function initToken() {
  const fromUrl = params.get("token");
  if (fromUrl !== null) {
    storeToken(fromUrl);
    params.delete("token"); // never left in the address bar, the history or a shared link
    writeUrl();
  } else {
    try {
      state.token = sessionStorage.getItem(TOKEN_KEY);
    } catch {
      state.token = memoryStore.get(TOKEN_KEY) ?? null;
    }
  }
}

// The connection badge: the open run's stream, or the "all" stream when none is open.
const connState = { all: "connecting", view: null };

export function setConn(which, value, detail = "") {
  connState[which] = value;
  showConn(detail);
}

function showConn(detail = "") {
  const shown = state.authBlocked ? "auth" : state.view ? connState.view : connState.all;
  const node = $("conn");
  node.textContent = {
    live: "live", reconnecting: "reconnecting…", auth: "token needed",
  }[shown] ?? "connecting…";
  node.className = `conn ${shown}`;
  if (detail) node.title = detail;
}

/** The server refused our token (or wants one): close the sockets and ask for one. */
export function authRequired() {
  if (state.authBlocked) return;
  state.authBlocked = true;
  state.allSocket?.close();
  state.allSocket = null;
  if (state.view?.socket) {
    state.view.socket.close();
    state.view.socket = null;
  }
  const form = $("token-form");
  form.hidden = false;
  $("token-error").hidden = state.token === null;
  $("token-input").value = "";
  $("token-input").focus();
  showConn();
}

/** The token form: a token entered is kept and the form hidden, then `onAccepted()`. */
export function initTokenForm(onAccepted) {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    storeToken(value);
    state.authBlocked = false;
    $("token-form").hidden = true;
    showConn();
    onAccepted();
  });
}
