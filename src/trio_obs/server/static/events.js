// Event types as the page sees them: the topic of each (SPEC §3), and which events are
// errors (shown in red) or alerts (listed in the side panel).

// Everything an event type is (topic, span role, error, needs action) comes from the
// server's one table of event facts, generated at /static/facts.js (DESIGN.md §6).
import { TOPICS, isError, needsAction, topicOf } from "./facts.js";

export { TOPICS, topicOf };
export const isErr = isError;
export const isAlert = needsAction;
