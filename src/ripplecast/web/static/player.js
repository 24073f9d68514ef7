/* Ripplecast's player: live channels (HLS with hls.js, HTTP-FLV with mpegts.js) and videos on
 * demand (hls.js, quality menu, scrub previews from the WebVTT sprite map).
 *
 * Page data comes from the data-* attributes of #watch: the Content-Security-Policy allows no
 * inline script. For tests and the curious, window.ripplecast = {player, protocol, latency()}:
 * the hls.js or mpegts.js instance, "hls" or "flv", and the measured delay behind live in
 * seconds (null when unknown).
 */
(function () {
  "use strict";

  var watch = document.getElementById("watch");
  var video = document.getElementById("player");
  if (!watch || !video) {
    return;
  }
  var quality = document.getElementById("quality");
  var HLS_WORKER = "/static/vendor/hls.worker.js";
  var api = { player: null, protocol: null, latency: function () { return null; } };
  window.ripplecast = api;

  function absolute(url) {
    return new URL(url, window.location.href).href;
  }

  function hlsAvailable() {
    return typeof window.Hls !== "undefined" && window.Hls.isSupported();
  }

  function levelLabel(level) {
    if (level.height) {
      return level.height + "p";
    }
    if (level.name) {
      return String(level.name);
    }
    if (level.bitrate) {
      return Math.round(level.bitrate / 1000) + " kbit/s";
    }
    return "Source";  // a live media playlist says nothing about its one rendition
  }

  function replaceOptions(select, options) {
    while (select.firstChild) {
      select.removeChild(select.firstChild);
    }
    options.forEach(function (item) {
      var option = document.createElement("option");
      option.value = item.value;
      option.textContent = item.label;
      select.appendChild(option);
    });
  }

  /* The quality menu for an hls.js instance: "Auto" plus one entry per level. */
  function bindQuality(hls, keepServerOptions) {
    if (!quality) {
      return;
    }
    quality.disabled = false;
    hls.on(window.Hls.Events.MANIFEST_PARSED, function () {
      var levels = hls.levels;
      if (keepServerOptions) {
        // Options rendered by the server carry the rendition name and height: map each one
        // to the matching hls.js level (hls.js orders levels by bitrate, not as listed).
        Array.prototype.forEach.call(quality.options, function (option) {
          if (option.value === "-1") {
            return;
          }
          var height = parseInt(option.getAttribute("data-height") || "0", 10);
          var found = -1;
          levels.forEach(function (level, index) {
            if (found < 0 && ((height && level.height === height) || level.name === option.value)) {
              found = index;
            }
          });
          option.value = String(found);
          option.disabled = found < 0;
        });
      } else {
        var items = [{ value: "-1", label: "Auto" }];
        levels.forEach(function (level, index) {
          items.push({ value: String(index), label: levelLabel(level) });
        });
        replaceOptions(quality, items);
      }
      quality.value = "-1";
    });
    hls.on(window.Hls.Events.LEVEL_SWITCHED, function (_event, data) {
      var auto = quality.querySelector('option[value="-1"]');
      var level = hls.levels[data.level];
      if (auto && level) {
        auto.textContent = hls.autoLevelEnabled ? "Auto (" + levelLabel(level) + ")" : "Auto";
      }
    });
  }

  if (quality) {
    quality.addEventListener("change", function () {
      var hls = api.player;
      if (api.protocol === "hls" && hls && typeof hls.currentLevel === "number") {
        hls.currentLevel = parseInt(quality.value, 10);
      }
    });
  }

  /* ---------------------------------------------------------------------------------------
   * Live */

  function startLive() {
    var hlsUrl = watch.getAttribute("data-hls-url");
    var flvUrl = watch.getAttribute("data-flv-url");
    var statusUrl = watch.getAttribute("data-status-url");
    var protocolSelect = document.getElementById("protocol");
    var offline = document.getElementById("offline");
    var indicator = document.getElementById("live-indicator");
    var delay = document.getElementById("delay");
    var protocol = watch.getAttribute("data-protocol") === "flv" ? "flv" : "hls";
    var retryAt = 0;

    function stop() {
      var player = api.player;
      api.player = null;
      if (player) {
        try {
          if (api.protocol === "flv") {
            player.pause();
            player.unload();
            player.detachMediaElement();
          }
          player.destroy();
        } catch (error) {
          /* already torn down */
        }
      }
      api.latency = function () { return null; };
      video.removeAttribute("src");
      video.load();
      indicator.hidden = true;
    }

    function goOffline() {
      stop();
      offline.hidden = false;
      retryAt = Date.now() + 2000;
    }

    function play() {
      var promise = video.play();
      if (promise && promise.catch) {
        promise.catch(function () { /* autoplay refused: the controls are there */ });
      }
    }

    function startHls() {
      if (!hlsAvailable()) {
        if (video.canPlayType("application/vnd.apple.mpegurl")) {
          video.src = hlsUrl;  // Safari plays HLS natively
          play();
          return;
        }
        offline.hidden = false;
        offline.textContent = "This browser cannot play HLS (hls.js is missing or unsupported).";
        return;
      }
      var hls = new window.Hls({
        workerPath: HLS_WORKER,
        liveSyncDurationCount: 2,
        liveMaxLatencyDurationCount: 4,
        maxLiveSyncPlaybackRate: 1.5,
        backBufferLength: 10
      });
      api.player = hls;
      api.latency = function () {
        var date = hls.playingDate;
        if (date && !isNaN(date.getTime())) {
          // The playlist's PROGRAM-DATE-TIME is the wall clock at ingest: now minus the
          // date of the picture on screen is the delay since the server received it.
          var seconds = (Date.now() - date.getTime()) / 1000;
          if (seconds >= 0 && seconds < 120) {
            return seconds;
          }
        }
        return typeof hls.latency === "number" && isFinite(hls.latency) && hls.latency > 0
          ? hls.latency : null;
      };
      bindQuality(hls, false);
      hls.on(window.Hls.Events.ERROR, function (_event, data) {
        if (!data.fatal) {
          return;
        }
        if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else {
          goOffline();  // the status poll starts it again while the stream is live
        }
      });
      hls.on(window.Hls.Events.MANIFEST_PARSED, play);
      hls.loadSource(hlsUrl);
      hls.attachMedia(video);
    }

    function startFlv() {
      var mpegts = window.mpegts;
      if (!mpegts || !mpegts.getFeatureList().mseLivePlayback) {
        offline.hidden = false;
        offline.textContent = "This browser cannot play HTTP-FLV (mpegts.js is missing or unsupported).";
        return;
      }
      if (quality) {
        replaceOptions(quality, [{ value: "-1", label: "Source" }]);
        quality.disabled = true;
      }
      var player = mpegts.createPlayer(
        { type: "flv", isLive: true, url: absolute(flvUrl) },
        {
          enableWorker: false,
          enableStashBuffer: false,
          lazyLoad: false,
          autoCleanupSourceBuffer: true,
          liveBufferLatencyChasing: true,
          // Catch up as soon as half a second is buffered: on a 1-2 s GOP a looser bound
          // leaves the viewer up to a GOP behind, depending on when it joined.
          liveBufferLatencyMaxLatency: 0.5,
          liveBufferLatencyMinRemain: 0.1
        }
      );
      api.player = player;
      api.latency = function () {
        var buffered = video.buffered;
        if (!buffered.length) {
          return null;
        }
        return Math.max(0, buffered.end(buffered.length - 1) - video.currentTime);
      };
      player.on(mpegts.Events.ERROR, goOffline);
      player.on(mpegts.Events.LOADING_COMPLETE, goOffline);  // the stream ended
      player.attachMediaElement(video);
      player.load();
      play();
    }

    function start() {
      stop();
      offline.hidden = true;
      api.protocol = protocol;
      if (protocol === "flv") {
        startFlv();
      } else {
        startHls();
      }
    }

    function poll() {
      fetch(statusUrl, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (info) {
          if (info && info.state === "live") {
            if (!api.player && Date.now() >= retryAt) {
              start();
            }
          } else if (!info && api.player) {
            goOffline();
          } else if (!info) {
            offline.hidden = false;
          }
        })
        .catch(function () { /* the network hiccupped: ask again */ })
        .then(function () { window.setTimeout(poll, api.player ? 5000 : 2000); });
    }

    var lastTime = -1;
    window.setInterval(function () {
      var advancing = api.player !== null && !video.paused && video.readyState >= 2 &&
        video.currentTime !== lastTime;
      lastTime = video.currentTime;
      indicator.hidden = !advancing;
      var seconds = api.latency();
      delay.textContent = seconds === null ? "–" : seconds.toFixed(1) + " s";
    }, 500);

    if (protocolSelect) {
      protocolSelect.value = protocol;
      protocolSelect.addEventListener("change", function () {
        protocol = protocolSelect.value === "flv" ? "flv" : "hls";
        var url = new URL(window.location.href);
        if (protocol === "flv") {
          url.searchParams.set("p", "flv");
        } else {
          url.searchParams.delete("p");
        }
        window.history.replaceState(null, "", url.href);
        if (api.player || offline.hidden) {
          start();
        }
      });
    }

    api.protocol = protocol;
    if (watch.getAttribute("data-live") === "true") {
      start();
    }
    window.setTimeout(poll, 2000);
  }

  /* ---------------------------------------------------------------------------------------
   * Video on demand */

  function parseTimestamp(text) {
    var parts = text.trim().split(":");
    var seconds = 0;
    for (var i = 0; i < parts.length; i++) {
      seconds = seconds * 60 + parseFloat(parts[i]);
    }
    return seconds;
  }

  /* WebVTT cues whose text is `sprite.jpg#xywh=X,Y,W,H`. */
  function parseSprites(text, base) {
    var cues = [];
    text.replace(/\r/g, "").split(/\n\n+/).forEach(function (block) {
      var lines = block.split("\n");
      for (var i = 0; i < lines.length - 1; i++) {
        if (lines[i].indexOf("-->") < 0) {
          continue;
        }
        var times = lines[i].split("-->");
        var ref = lines[i + 1].trim();
        var match = /^(.*)#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(ref);
        if (!match) {
          continue;
        }
        cues.push({
          start: parseTimestamp(times[0]),
          end: parseTimestamp(times[1].trim().split(/\s+/)[0]),
          url: new URL(match[1], base).href,
          x: +match[2], y: +match[3], w: +match[4], h: +match[5]
        });
      }
    });
    return cues;
  }

  function formatTime(seconds) {
    var whole = Math.max(0, Math.floor(seconds));
    var minutes = Math.floor(whole / 60);
    var rest = whole % 60;
    return minutes + ":" + (rest < 10 ? "0" : "") + rest;
  }

  function startVod() {
    var src = watch.getAttribute("data-src");
    var thumbnails = watch.getAttribute("data-thumbnails");
    var seek = document.getElementById("seek");
    var preview = document.getElementById("scrub-preview");
    var previewTime = preview ? preview.querySelector(".scrub-time") : null;
    var cues = [];
    api.protocol = "hls";

    if (hlsAvailable()) {
      var hls = new window.Hls({ workerPath: HLS_WORKER });
      api.player = hls;
      bindQuality(hls, true);
      hls.on(window.Hls.Events.ERROR, function (_event, data) {
        if (data.fatal && data.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        }
      });
      hls.loadSource(src);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = src;
      if (quality) {
        quality.disabled = true;
      }
    }

    if (!seek) {
      return;
    }
    var dragging = false;
    video.addEventListener("loadedmetadata", function () {
      if (isFinite(video.duration) && video.duration > 0) {
        seek.max = String(video.duration);
      }
    });
    video.addEventListener("timeupdate", function () {
      if (!dragging) {
        seek.value = String(video.currentTime);
      }
    });
    seek.addEventListener("input", function () {
      dragging = true;
      video.currentTime = parseFloat(seek.value);
    });
    seek.addEventListener("change", function () {
      dragging = false;
      video.currentTime = parseFloat(seek.value);
    });

    if (thumbnails && preview) {
      fetch(thumbnails, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : ""; })
        .then(function (text) { cues = parseSprites(text, absolute(thumbnails)); })
        .catch(function () { cues = []; });
      seek.addEventListener("mousemove", function (event) {
        var rect = seek.getBoundingClientRect();
        var max = parseFloat(seek.max) || 0;
        if (!cues.length || rect.width <= 0 || max <= 0) {
          return;
        }
        var fraction = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
        var at = fraction * max;
        var cue = cues[cues.length - 1];
        for (var i = 0; i < cues.length; i++) {
          if (at >= cues[i].start && at < cues[i].end) {
            cue = cues[i];
            break;
          }
        }
        preview.style.width = cue.w + "px";
        preview.style.height = cue.h + "px";
        preview.style.backgroundImage = 'url("' + cue.url.replace(/"/g, "%22") + '")';
        preview.style.backgroundPosition = "-" + cue.x + "px -" + cue.y + "px";
        var left = event.clientX - rect.left - cue.w / 2;
        preview.style.left = Math.min(Math.max(0, left), Math.max(0, rect.width - cue.w)) + "px";
        if (previewTime) {
          previewTime.textContent = formatTime(at);
        }
        preview.hidden = false;
      });
      seek.addEventListener("mouseleave", function () {
        preview.hidden = true;
      });
    }
  }

  if (watch.getAttribute("data-kind") === "live") {
    startLive();
  } else {
    startVod();
  }
})();
