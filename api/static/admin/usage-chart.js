// The admin customer page's usage charts, drawn with the vendored uPlot
// (api/static/vendor/uplot). The buckets are those the page embeds as JSON in
// #usage-history, as GET /v1/usage/history answers them: this script computes
// no number, it only places each bucket on the time axis. An hour or day with
// no bucket is drawn as a gap, not as zero (for a max or last metric "no
// events" is not 0). The table under each chart holds the same numbers.
(function () {
  "use strict";
  var source = document.getElementById("usage-history");
  if (!source || typeof uPlot === "undefined") return;
  var charts = JSON.parse(source.textContent);
  var utc = function (seconds) { return uPlot.tzDate(new Date(seconds * 1e3), "Etc/UTC"); };

  charts.forEach(function (chart) {
    if (!chart.buckets.length) return;
    var section = null;
    document.querySelectorAll("section.usage-chart").forEach(function (candidate) {
      if (candidate.dataset.metric === chart.metric) section = candidate;
    });
    var box = section && section.querySelector(".plot");
    if (!box) return;
    var step = chart.granularity === "hour" ? 3600 : 86400;
    var since = Date.parse(chart.since) / 1000;
    var until = Date.parse(chart.until) / 1000;
    var byStart = {};
    chart.buckets.forEach(function (b) { byStart[Date.parse(b.start) / 1000] = Number(b.value); });
    var xs = [];
    var ys = [];
    for (var t = Math.floor(since / step) * step; t < until; t += step) {
      xs.push(t);
      ys.push(Object.prototype.hasOwnProperty.call(byStart, t) ? byStart[t] : null);
    }
    var label = chart.metric + (chart.unit ? " (" + chart.unit + ")" : "");
    var options = {
      width: Math.max(320, box.clientWidth),
      height: 220,
      tzDate: utc,
      scales: { x: { time: true, range: [xs[0] - step / 2, xs[xs.length - 1] + step / 2] } },
      series: [
        { label: chart.granularity === "hour" ? "Hour (UTC)" : "Day (UTC)" },
        {
          label: label,
          stroke: "#2f5fb3",
          fill: "rgba(47, 95, 179, 0.35)",
          paths: uPlot.paths.bars({ size: [0.8, 40] }),
          points: { show: false },
        },
      ],
      legend: { live: true },
    };
    new uPlot(options, [xs, ys], box);
    box.dataset.drawn = String(chart.buckets.length);
  });
})();
