// The console's only script: draws the report's charts from data the page carries (no inline
// script: the Content-Security-Policy allows files from this site only).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A printable sheet (the binding code): its button prints the page (the print stylesheet
  // leaves only the sheet).
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
});
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
document.addEventListener("DOMContentLoaded", function () {
  // The dashboard: check-in on-time rate by week and month, and people by population.
  var holder = document.getElementById("dashboard-data");
  if (!holder || typeof Chart === "undefined") {
    return;
  }
  var charts = JSON.parse(holder.getAttribute("data-charts"));
  function draw(id, type, labels, values, label, max) {
    var canvas = document.getElementById(id);
    if (!canvas || labels.length === 0) {
      return;
    }
    var y = max ? { min: 0, max: max } : { min: 0, ticks: { precision: 0 } };
    new Chart(canvas, {
      type: type,
      data: { labels: labels, datasets: [{ label: label, data: values, backgroundColor: "#2b5a8f", borderColor: "#2b5a8f" }] },
      options: { animation: false, responsive: false, scales: { y: y } }
    });
  }
  draw("chart-weeks", "line", charts.weeks.labels, charts.weeks.values, "按时率(%)", 100);
  draw("chart-months", "bar", charts.months.labels, charts.months.values, "按时率(%)", 100);
  draw("chart-population", "bar", charts.population.labels, charts.population.values, "在册人数", null);
});
document.addEventListener("DOMContentLoaded", function () {
  // An irreversible step asks first (`data-confirm` on its form); a form being sent says so and
  // is not sent twice.
  document.querySelectorAll("form[data-confirm], form[data-busy]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var question = form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) {
        event.preventDefault();
        return;
      }
      var button = form.querySelector("button[type=submit]");
      if (button) {
        button.disabled = true;
        button.textContent = "处理中…";
      }
    });
  });
});
