// A conversation's page, live: its events stream from the server (/api/conversations/ID/events); one past the
// last step shown reloads the page. A page showing a past step (?at=N) does not follow.
(function () {
  const page = document.getElementById("conversation");
  if (!page || !window.EventSource || new URLSearchParams(location.search).has("at")) return;
  const shown = Number(page.dataset.lastSequence || 0);
  const stream = new EventSource("/api/conversations/" + encodeURIComponent(page.dataset.id) + "/events");
  function seen(message) {
    const event = JSON.parse(message.data);
    if (event.sequence_number > shown) { stream.close(); location.reload(); }
  }
  stream.onmessage = seen;
  ["conversation_started", "tool_called", "tool_result", "handoff_initiated", "response_generated", "llm_called",
   "error_occurred", "guardrail_triggered", "saga_started", "saga_step_completed",
   "saga_step_failed", "saga_step_compensated", "saga_compensation_failed", "saga_completed", "saga_rolled_back"]
    .forEach(function (kind) { stream.addEventListener(kind, seen); });
  stream.onopen = function () { page.dataset.stream = "open"; };
  // let the connection go as the page goes (a browser holds a few connections a server, a kept page's stream
  // would hold one of them)
  window.addEventListener("pagehide", function () { stream.close(); });
})();
