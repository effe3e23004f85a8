// The analytics page's charts (Chart.js), fed by /api/charts and updated every 5 seconds.
(function () {
  const palette = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
                   "#4b5563", "#65a30d", "#7c3aed", "#0d9488"];
  const problem = document.getElementById("charts-problem");
  const charts = {};

  function draw(id, config) {
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update("none");
    } else {
      charts[id] = new Chart(document.getElementById(id), config);
    }
  }

  function toolsOverTime(rows, bucketSeconds) {
    const at = t => Date.parse(t.endsWith("Z") || t.includes("+") ? t : t + "Z");
    const seen = rows.map(r => at(r.at));
    const times = [];  // every bucket from the first to the last, empty ones too, so the axis is time
    for (let t = Math.min(...seen); seen.length && t <= Math.max(...seen); t += bucketSeconds * 1000) times.push(t);
    const tools = [...new Set(rows.map(r => r.tool_name))].sort();
    const calls = new Map(rows.map(r => [at(r.at) + "|" + r.tool_name, r.calls]));
    const label = t => new Date(t).toISOString().slice(11, 16);
    return {
      type: "bar",
      data: {
        labels: times.map(label),
        datasets: tools.map((tool, i) => ({label: tool, backgroundColor: palette[i % palette.length],
                                          data: times.map(t => calls.get(t + "|" + tool) || 0)})),
      },
      options: {animation: false, maintainAspectRatio: false, scales: {x: {stacked: true,
                title: {display: true, text: "UTC, per " + bucketSeconds / 60 + " min"}}, y: {stacked: true}},
                plugins: {legend: {position: "bottom", labels: {boxWidth: 10}}}},
    };
  }

  function failures(rows) {
    return {
      type: "bar",
      data: {labels: rows.map(r => r.kind + ": " + r.type),
             datasets: [{label: "failures", data: rows.map(r => r.failures), backgroundColor: "#dc2626"}]},
      options: {animation: false, maintainAspectRatio: false, indexAxis: "y", plugins: {legend: {display: false}},
                scales: {x: {ticks: {precision: 0}}}},
    };
  }

  function models(rows) {
    return {
      type: "bar",
      data: {labels: rows.map(r => r.model), datasets: [
        {label: "input tokens", data: rows.map(r => r.input_tokens), backgroundColor: "#2563eb", yAxisID: "tokens"},
        {label: "output tokens", data: rows.map(r => r.output_tokens), backgroundColor: "#93c5fd", yAxisID: "tokens"},
        {label: "cost (USD)", data: rows.map(r => r.cost_usd), backgroundColor: "#16a34a", yAxisID: "cost"}]},
      options: {animation: false, maintainAspectRatio: false, plugins: {legend: {position: "bottom"}},
                scales: {tokens: {position: "left", title: {display: true, text: "tokens"}},
                         cost: {position: "right", grid: {drawOnChartArea: false}, title: {display: true, text: "USD"}}}},
    };
  }

  async function refresh() {
    try {
      const response = await fetch("/api/charts");
      const body = await response.json();
      if (!response.ok) throw new Error(body.detail || response.statusText);
      draw("chart-tools", toolsOverTime(body.tool_calls, body.bucket_seconds));
      draw("chart-failures", failures(body.failures));
      draw("chart-models", models(body.models));
      problem.hidden = true;
      document.body.dataset.charts = "drawn";
    } catch (err) {
      problem.textContent = err.message;
      problem.hidden = false;
    }
  }
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, 5000);
})();
