/* The creator's dashboard: copy a new stream key, live stats of the selected channel with a
 * small bitrate chart (plain canvas), and transcoding progress of videos still processing.
 * Everything here is an extra: the pages work without it.
 */
(function () {
  "use strict";

  /* --- copy the stream key shown once --------------------------------------------------- */

  var copy = document.getElementById("copy-key");
  if (copy) {
    copy.addEventListener("click", function () {
      var target = document.getElementById(copy.getAttribute("data-target") || "new-key");
      var note = document.getElementById("copy-status");
      var text = target ? target.textContent.trim() : "";
      function done(ok) {
        if (note) {
          note.textContent = ok ? "Copied." : "Select the key and copy it by hand.";
        }
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
        return;
      }
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (error) {
        ok = false;
      }
      done(ok);
    });
  }

  /* --- live stats ----------------------------------------------------------------------- */

  var stats = document.getElementById("live-stats");
  var SAMPLES = 90;  // 3 minutes at one sample every 2 s

  function formatBitrate(bits) {
    if (bits >= 1e6) {
      return (bits / 1e6).toFixed(2) + " Mbit/s";
    }
    return Math.round(bits / 1000) + " kbit/s";
  }

  function draw(canvas, samples) {
    var context = canvas.getContext("2d");
    if (!context) {
      return;
    }
    var width = canvas.width;
    var height = canvas.height;
    context.clearRect(0, 0, width, height);
    context.strokeStyle = "#c9ced6";
    context.lineWidth = 1;
    context.beginPath();
    context.moveTo(0, height - 0.5);
    context.lineTo(width, height - 0.5);
    context.stroke();
    if (samples.length < 2) {
      return;
    }
    var top = Math.max.apply(null, samples) || 1;
    context.strokeStyle = "#d6336c";
    context.lineWidth = 2;
    context.beginPath();
    samples.forEach(function (value, index) {
      var x = (index / (SAMPLES - 1)) * width;
      var y = height - 4 - (value / top) * (height - 16);
      if (index === 0) {
        context.moveTo(x, y);
      } else {
        context.lineTo(x, y);
      }
    });
    context.stroke();
    context.fillStyle = "#555";
    context.font = "12px system-ui, sans-serif";
    context.fillText("max " + formatBitrate(top), 6, 14);
  }

  if (stats) {
    var url = stats.getAttribute("data-status-url");
    var canvas = document.getElementById("stats-chart");
    var fields = {
      state: document.getElementById("stats-state"),
      bitrate: document.getElementById("stats-bitrate"),
      fps: document.getElementById("stats-fps"),
      viewers: document.getElementById("stats-viewers"),
      resolution: document.getElementById("stats-resolution")
    };
    var samples = [];

    var poll = function () {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (info) {
          if (!info) {
            fields.state.textContent = "offline";
            fields.bitrate.textContent = fields.fps.textContent = "–";
            fields.viewers.textContent = fields.resolution.textContent = "–";
            samples.push(0);
          } else {
            fields.state.textContent = info.state;
            fields.bitrate.textContent = formatBitrate(info.ingest_bitrate || 0);
            fields.fps.textContent = info.video ? String(info.video.fps) : "–";
            fields.viewers.textContent = String(info.viewers ? info.viewers.total : 0);
            fields.resolution.textContent = info.video && info.video.width
              ? info.video.width + "×" + info.video.height : "–";
            samples.push(info.ingest_bitrate || 0);
          }
          while (samples.length > SAMPLES) {
            samples.shift();
          }
          if (canvas) {
            draw(canvas, samples);
          }
        })
        .catch(function () { /* try again at the next tick */ })
        .then(function () { window.setTimeout(poll, 2000); });
    };
    poll();
  }

  /* --- transcoding progress ------------------------------------------------------------- */

  var bars = document.querySelectorAll("progress.job-progress[data-video]");
  Array.prototype.forEach.call(bars, function (bar) {
    var id = bar.getAttribute("data-video");
    var row = bar.closest("[data-state]");
    if (row && row.getAttribute("data-state") !== "processing") {
      return;
    }
    var follow = function () {
      fetch("/api/v1/videos/" + encodeURIComponent(id), { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (video) {
          if (!video) {
            return;
          }
          var percent = video.state === "ready" ? 100
            : Math.round((video.job ? video.job.progress : 0) * 100);
          bar.value = percent;
          bar.textContent = percent + " %";
          var state = row ? row.querySelector(".video-state") : null;
          if (state) {
            state.textContent = video.state;
          }
          if (video.state === "processing") {
            window.setTimeout(follow, 2000);
          } else if (!row) {
            window.location.reload();  // the video page: show the player now
          }
        })
        .catch(function () { window.setTimeout(follow, 5000); });
    };
    follow();
  });
})();
