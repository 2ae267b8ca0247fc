// The console's only script: draws the report's charts from data the page carries (no inline
// script: the Content-Security-Policy allows files from this site only).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var holder = document.getElementById("chart-data");
  if (!holder || typeof Chart === "undefined") {
    return;
  }
  var charts = JSON.parse(holder.getAttribute("data-charts"));
  function bar(id, labels, values, label) {
    var canvas = document.getElementById(id);
    if (!canvas || labels.length === 0) {
      return;
    }
    new Chart(canvas, {
      type: "bar",
      data: { labels: labels, datasets: [{ label: label, data: values, backgroundColor: "#2b5a8f" }] },
      options: { animation: false, responsive: false, scales: { y: { min: 0, max: 100 } } }
    });
  }
  bar("chart-programs", charts.programs.labels, charts.programs.values, "履行率(%)");
  bar("chart-units", charts.units.labels, charts.units.values, "履行率(%)");
});
