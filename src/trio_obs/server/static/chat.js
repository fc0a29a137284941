// A span opened in the detail pane (SPEC §12): a model call as a chat — system
// instructions, user, assistant, tool calls with their arguments, tool results — as separate
// blocks, with its model, tokens, cost and finish reason; any other span's facts. Messages
// are the OpenTelemetry GenAI JSON messages ({role, parts: [{type, ...}]}) that span:start
// and span:end carry. Text only ever reaches the DOM as text.

import { MISSING } from "./model.js";
import { badge, el, fmt, ms } from "./dom.js";

const real = (ev) => (ev && ev !== MISSING ? ev : null);

/** The span's start and end events, whichever of them `ev` is. */
export function spanEvents(v, ev) {
  const n = v.tree.nodes.get(ev.spanId) ?? (v.tree.rootId === ev.spanId ? v.tree.root : null);
  const start = real(v.ev[n?.openSeq]) ?? (ev.type === "span:start" ? ev : null);
  const end = real(v.ev[n?.closeSeq]) ?? (ev.type === "span:end" ? ev : null);
  return { n, start, end };
}

function pretty(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

function textOfPart(p) {
  return p.content ?? p.text ?? (typeof p === "string" ? p : null);
}

/** One part of a message as a block. */
function partBlock(p) {
  if (typeof p === "string") return el("div", "part text", p);
  switch (p.type) {
    case "tool_call": {
      const b = el("div", "part tool-call", el("div", "part-head", "tool call ", el("b", "", p.name ?? "?"),
        p.id ? el("span", "muted", ` ${p.id}`) : null), el("pre", "json", pretty(p.arguments ?? {})));
      b.dataset.testid = "chat-tool-call";
      return b;
    }
    case "tool_call_response": {
      const b = el("div", "part tool-result", el("div", "part-head", "tool result",
        p.id ? el("span", "muted", ` ${p.id}`) : null), el("pre", "json", pretty(p.response ?? p.result ?? "")));
      b.dataset.testid = "chat-tool-result";
      return b;
    }
    case "reasoning":
      return el("div", "part reasoning", el("div", "part-head", "reasoning"), textOfPart(p) ?? "");
    default: {
      const t = textOfPart(p);
      return t !== null ? el("div", "part text", String(t)) : el("pre", "json", pretty(p));
    }
  }
}

function message(role, parts, extra) {
  const box = el("div", `msg m-${role}`, el("div", "msg-role", role, extra ?? null));
  for (const p of parts ?? []) box.append(partBlock(p));
  box.dataset.testid = "chat-message";
  box.dataset.role = role;
  return box;
}

/** The chat of a model call: its messages in order, then what it answered. */
function chat(start, end) {
  const system = end?.systemInstructions ?? start?.systemInstructions;
  const input = end?.inputMessages ?? start?.inputMessages ?? [];
  const output = end?.outputMessages ?? [];
  const out = [];
  if (system?.length) out.push(message("system", system));
  for (const m of input) out.push(message(m.role ?? "?", m.parts ?? [m]));
  for (const m of output) {
    const fin = m.finish_reason ?? m.finishReason;
    out.push(message(m.role ?? "assistant", m.parts ?? [m], fin ? el("span", "muted", ` · ${fin}`) : null));
  }
  if (!output.length && end?.output) out.push(message("assistant", [{ type: "text", content: end.output }]));
  if (!out.length) out.push(el("p", "muted", end ? "The producer sent no messages." : "Waiting for the answer…"));
  const box = el("div", "chat", ...out);
  box.dataset.testid = "chat";
  return box;
}

function field(dl, label, value) {
  if (value === undefined || value === null || value === "") return;
  dl.append(el("dt", "", label), el("dd", "", value instanceof Node ? value : String(value)));
}

function costText(c) {
  if (c === "unknown") return "unknown (no price for this model)";
  return typeof c === "number" ? `$${c.toFixed(c < 0.01 ? 5 : 3)}` : null;
}

/** The detail pane's parts for a span:start / span:end event. */
export function spanParts(v, ev, dl) {
  const { n, start, end } = spanEvents(v, ev);
  const kind = n?.kind ?? start?.kind ?? end?.kind;
  field(dl, "span", `${kind ?? "span"} ${n?.name ?? start?.name ?? end?.name ?? ""}`);
  field(dl, "agent", n?.agent ?? start?.agent ?? end?.agent);
  field(dl, "state", badge(end ? end.state : n?.state ?? "running"));
  field(dl, "duration", ms(end?.durationMs));
  field(dl, "error", end?.error);
  const out = [];
  if (kind === "llm") {
    field(dl, "model", end?.model ?? start?.model);
    field(dl, "provider", end?.provider ?? start?.provider);
    const u = end?.usage;
    if (u) {
      field(dl, "tokens", `${fmt(u.inputTokens ?? 0)} in · ${fmt(u.outputTokens ?? 0)} out`);
      const other = Object.entries(u).filter(([k]) => k !== "inputTokens" && k !== "outputTokens");
      if (other.length) field(dl, "other counts", other.map(([k, x]) => `${k} ${fmt(x)}`).join(" · "));
    }
    field(dl, "cost", costText(n?.cost));
    field(dl, "finish", (end?.finishReasons ?? []).join(", "));
    if (end?.cut) {
      const cut = el("p", "cut", `${fmt(end.cut)} bytes were cut from the middle of the longest message.`);
      cut.dataset.testid = "chat-cut";
      out.push(cut);
    }
    out.push(chat(start, end));
  } else if (end?.output) {
    out.push(el("div", "block", el("h3", "", "Output"), el("pre", "out", end.output)));
  }
  return out;
}
