// Draws the overview charts from the JSON the server embedded; Chart.js is served locally.
(function () {
  "use strict";
  var select = document.querySelector("select[name=agency]");
  if (select) { select.addEventListener("change", function () { select.form.submit(); }); }
  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  new Chart(document.getElementById("trend"), {
    type: "line",
    data: { labels: data.trend.labels, datasets: [{ label: data.trend.label, data: data.trend.rates, borderColor: "#0b5cab", spanGaps: false, tension: 0.2 }] },
    options: { locale: data.locale, animation: false, scales: { y: { min: 0, max: 100 } } }
  });
  new Chart(document.getElementById("bands"), {
    type: "bar",
    data: { labels: data.bands.labels, datasets: [{ label: data.bands.label, data: data.bands.counts, backgroundColor: ["#067647", "#2e90fa", "#fdb022", "#f79009", "#d92d20"] }] },
    options: { locale: data.locale, animation: false, plugins: { legend: { display: false } } }
  });
})();
