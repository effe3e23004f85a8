// The dashboard's live part: fetched again as events reach the log (the server's /api/events stream), and every
// 10 seconds in any case (the counters of the stores move without new events: lag, health); while the tab is
// visible. Without the stream (a browser without EventSource, a role that may not read it) every 2 seconds.
(function () {
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");
  if (!live) return;
  let pending = null;
  async function refresh() {
    pending = null;
    if (document.hidden) return;
    try {
      const response = await fetch(live.dataset.src, {headers: {"Accept": "text/html"}});
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      live.innerHTML = await response.text();
      updated.textContent = "updated " + new Date().toLocaleTimeString();
      updated.classList.remove("stale");
    } catch (err) {
      updated.textContent = "the server does not answer (" + err.message + "); is `agentlog serve` running?";
      updated.classList.add("stale");
    }
  }
  function soon() {  // at most one refresh every half second, however many events come
    if (pending === null) pending = setTimeout(refresh, 500);
  }
  updated.textContent = "updated " + new Date().toLocaleTimeString();
  let every = setInterval(refresh, 2000);
  if (window.EventSource) {
    const stream = new EventSource("/api/events");
    stream.onopen = function () { clearInterval(every); every = setInterval(refresh, 10000); live.dataset.stream = "open"; };
    stream.onmessage = soon;
    ["conversation_started", "tool_called", "tool_result", "handoff_initiated", "response_generated", "llm_called",
     "error_occurred", "guardrail_triggered"].forEach(function (kind) { stream.addEventListener(kind, soon); });
    stream.onerror = function () { clearInterval(every); every = setInterval(refresh, 2000); live.dataset.stream = "lost"; };
    window.addEventListener("pagehide", function () { stream.close(); });  // a kept page holds no connection
  }
})();
