// Event types as the page sees them: the topic of each (SPEC §3), which events are errors
// (shown in red) or alerts (listed in the side panel), and what each does to its span.

// Everything an event type is (topic, span role, error, needs action) comes from the
// server's one table of event facts, generated at /static/facts.js (DESIGN.md §6).
import {
  TOPICS, isError, needsAction, roleOf, spanIdOf, spanKindOf, topicOf,
} from "./facts.js";

export { TOPICS, topicOf };
export const isErr = isError;
export const isAlert = needsAction;

/**
 * What an event does to its span (CONTRACT A): {role: opens|closes|content|status, kind, id},
 * or null when it belongs to no span.
 */
export function spanRole(ev) {
  const id = spanIdOf(ev);
  const role = roleOf(ev);
  if (role === "status") return { role, kind: null, id };
  return id ? { role, kind: spanKindOf(ev), id } : null;
}
