// Event types as the page sees them: the topic of each (SPEC §3), and which events are
// errors (shown in red) or alerts (listed in the side panel).

// Event type -> topic, as SPEC §3 (plan OBS-602) maps them.
const TOPIC_OF_TYPE = {
  "transcript:entry": "transcript", "tool:start": "tools", "tool:end": "tools",
  "tool:output": "tools", "assertion:result": "assertions", "skill:start": "skills",
  "skill:end": "skills", "messagebus:event": "messagebus", "wave:status": "waves",
  "agent:heartbeat": "agents", "execution:status": "execution",
  "span:start": "spans", "span:end": "spans",
};
/**
 * What an event does to its span (CONTRACT A): {role: opens|closes|content|status, kind, id},
 * or null when it belongs to no span.
 */
export function spanRole(ev) {
  switch (ev.type) {
    case "span:start": return { role: "opens", kind: ev.kind, id: ev.spanId };
    case "span:end": return { role: "closes", kind: ev.kind, id: ev.spanId };
    case "tool:start": return { role: "opens", kind: "tool", id: ev.toolUseId };
    case "tool:end": return { role: "closes", kind: "tool", id: ev.toolUseId };
    case "tool:output": return { role: "content", kind: "tool", id: ev.toolUseId };
    case "skill:start": return { role: "opens", kind: "skill", id: ev.skillTraceId };
    case "skill:end": return { role: "closes", kind: "skill", id: ev.skillTraceId };
    case "execution:status": return { role: "status", kind: null, id: ev.spanId };
    default: return ev.spanId ? { role: "content", kind: null, id: ev.spanId } : null;
  }
}

export const TOPICS = [...new Set(Object.values(TOPIC_OF_TYPE))];
export const topicOf = (ev) => TOPIC_OF_TYPE[ev.type] ?? "other";

const BAD = new Set(["error", "failed", "fail", "blocked", "critical"]);
export function isErr(ev) {
  switch (ev.type) {
    case "tool:end": return BAD.has(ev.resultStatus) || ev.isError === true;
    case "assertion:result": return ev.assertion?.result === "fail";
    case "messagebus:event": return BAD.has(ev.entry?.severity) || ev.requiresAction === true;
    case "transcript:entry": return ev.entry?.entryType === "error";
    case "tool:output": return false; // stderr is not an error
    default: return BAD.has(ev.status);
  }
}

export function isAlert(ev) {
  switch (ev.type) {
    case "tool:end": return ev.resultStatus === "error" || ev.resultStatus === "blocked";
    case "assertion:result": return ev.assertion?.result === "fail";
    case "messagebus:event": return ev.requiresAction === true;
    case "execution:status": return ev.status === "failed";
    default: return false;
  }
}
