// The dashboard's live part: fetched again every 2 seconds while the tab is visible.
(function () {
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");
  if (!live) return;
  async function refresh() {
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
  updated.textContent = "updated " + new Date().toLocaleTimeString();
  setInterval(refresh, 2000);
})();
