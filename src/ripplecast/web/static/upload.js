/* Resumable uploads from the upload page, with the tus 1.0 core protocol in plain JavaScript.
 *
 * POST /api/v1/uploads makes an upload (its URL comes back in Location); PATCH sends the file
 * from Upload-Offset in chunks, with progress; HEAD says where to resume. The upload's URL is
 * remembered in localStorage under the file's name, size and modification time, so choosing the
 * same file again after an interruption (or a reload) continues where it stopped.
 *
 * The session cookie authenticates; changes carry the session's CSRF token (X-CSRF-Token),
 * read from the form's hidden field. Without JavaScript the form posts the file in one request.
 */
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.XMLHttpRequest) {
    return;
  }
  var TUS = "1.0.0";
  var MAX_RETRIES = 5;
  var endpoint = form.getAttribute("data-endpoint");
  var chunkBytes = parseInt(form.getAttribute("data-chunk-bytes"), 10) || 8 * 1024 * 1024;
  var input = document.getElementById("file");
  var progress = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var button = form.querySelector('button[type="submit"]');
  var csrf = form.elements.namedItem("csrf_token").value;

  function say(text) {
    status.textContent = text;
  }

  function base64(text) {
    var bytes = new TextEncoder().encode(text);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return window.btoa(binary);
  }

  function megabytes(count) {
    return (count / (1024 * 1024)).toFixed(1) + " MiB";
  }

  function storageKey(file) {
    return "ripplecast-upload:" + [file.name, file.size, file.lastModified].join(":");
  }

  function problem(text, fallback) {
    try {
      var body = JSON.parse(text);
      if (body && body.detail) {
        return body.detail;
      }
    } catch (error) {
      /* not a problem document */
    }
    return fallback;
  }

  function show(sent, total) {
    var percent = total ? Math.floor((sent / total) * 100) : 0;
    progress.value = percent;
    progress.textContent = percent + " %";
  }

  /* Where a remembered upload stands: its offset, or null when the server no longer has it. */
  function resumeOffset(url) {
    return fetch(url, { method: "HEAD", headers: { "Tus-Resumable": TUS }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          return null;
        }
        var offset = parseInt(response.headers.get("Upload-Offset"), 10);
        return isNaN(offset) ? null : offset;
      });
  }

  function create(file, title, visibility) {
    var metadata = [
      "filename " + base64(file.name),
      "title " + base64(title || file.name.replace(/\.[^.]*$/, "")),
      "visibility " + base64(visibility)
    ].join(",");
    return fetch(endpoint, {
      method: "POST",
      headers: {
        "Tus-Resumable": TUS,
        "Upload-Length": String(file.size),
        "Upload-Metadata": metadata,
        "X-CSRF-Token": csrf
      }
    }).then(function (response) {
      if (response.status !== 201) {
        return response.text().then(function (text) {
          throw new Error(problem(text, "the server refused the upload (" + response.status + ")"));
        });
      }
      return new URL(response.headers.get("Location"), window.location.href).pathname;
    });
  }

  /* PATCH one chunk from `offset`; resolves with {offset, video} from the answer. */
  function patch(url, file, offset) {
    return new Promise(function (resolve, reject) {
      var end = Math.min(file.size, offset + chunkBytes);
      var request = new XMLHttpRequest();
      request.open("PATCH", url);
      request.setRequestHeader("Tus-Resumable", TUS);
      request.setRequestHeader("Upload-Offset", String(offset));
      request.setRequestHeader("Content-Type", "application/offset+octet-stream");
      request.setRequestHeader("X-CSRF-Token", csrf);
      request.upload.onprogress = function (event) {
        show(offset + event.loaded, file.size);
        say("Uploading: " + megabytes(offset + event.loaded) + " of " + megabytes(file.size));
      };
      request.onload = function () {
        if (request.status === 204) {
          resolve({
            offset: parseInt(request.getResponseHeader("Upload-Offset"), 10),
            video: request.getResponseHeader("Ripplecast-Video")
          });
        } else {
          var error = new Error(problem(request.responseText, "upload refused (" + request.status + ")"));
          error.status = request.status;
          reject(error);
        }
      };
      request.onerror = function () {
        reject(new Error("the connection was interrupted"));
      };
      request.send(file.slice(offset, end));
    });
  }

  function describe(videoId, description) {
    if (!description) {
      return Promise.resolve();
    }
    // Upload-Metadata is short: a long description is set once the video exists.
    return fetch("/api/v1/videos/" + encodeURIComponent(videoId), {
      method: "PATCH",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ description: description })
    });
  }

  function watchTranscoding(videoId) {
    var link = document.createElement("a");
    link.href = "/v/" + encodeURIComponent(videoId);
    link.textContent = "the video's page";
    function poll() {
      fetch("/api/v1/videos/" + encodeURIComponent(videoId), { cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (video) {
          if (!video) {
            return;
          }
          if (video.state === "processing") {
            var percent = video.job ? Math.round(video.job.progress * 100) : 0;
            say("Uploaded. Transcoding: " + percent + " %");
            window.setTimeout(poll, 2000);
          } else {
            status.textContent = video.state === "ready"
              ? "Uploaded and ready: see " : "Uploaded, but transcoding failed: see ";
            status.appendChild(link);
          }
        })
        .catch(function () { /* the page still has the link below */ });
    }
    poll();
  }

  function upload(file) {
    var key = storageKey(file);
    var title = form.elements.namedItem("title").value;
    var description = form.elements.namedItem("description").value;
    var visibility = form.elements.namedItem("visibility").value;
    var retries = 0;
    var url = window.localStorage.getItem(key);

    var begin = (url ? resumeOffset(url) : Promise.resolve(null)).then(function (offset) {
      if (offset !== null) {
        say("Resuming at " + megabytes(offset) + " of " + megabytes(file.size) + "…");
        return offset;
      }
      window.localStorage.removeItem(key);
      return create(file, title, visibility).then(function (made) {
        url = made;
        window.localStorage.setItem(key, url);
        return 0;
      });
    });

    function send(offset) {
      show(offset, file.size);
      say("Uploading: " + megabytes(offset) + " of " + megabytes(file.size));
      return patch(url, file, offset).then(function (answer) {
        retries = 0;
        if (answer.video) {
          return answer.video;
        }
        return send(answer.offset);
      }, function (error) {
        if (retries < MAX_RETRIES && (error.status === 409 || !error.status)) {
          // Interrupted, or out of step with the server: ask where it stands and go on.
          retries += 1;
          say("Interrupted (" + error.message + "): resuming…");
          return new Promise(function (wait) { window.setTimeout(wait, 1000 * retries); })
            .then(function () { return resumeOffset(url); })
            .then(function (at) {
              if (at === null) {
                throw new Error("the server no longer has this upload");
              }
              return send(at);
            });
        }
        if (error.status && error.status !== 409) {
          window.localStorage.removeItem(key);  // refused for good: start afresh next time
        }
        throw error;
      });
    }

    return begin.then(send).then(function (videoId) {
      window.localStorage.removeItem(key);
      show(file.size, file.size);
      say("Uploaded. Transcoding…");
      return describe(videoId, description).then(function () { watchTranscoding(videoId); });
    });
  }

  form.addEventListener("submit", function (event) {
    var file = input.files && input.files[0];
    if (!file) {
      return;  // the browser's own `required` message
    }
    event.preventDefault();
    button.disabled = true;
    upload(file)
      .catch(function (error) {
        say("Upload failed: " + error.message + ". Choose the same file again to resume.");
      })
      .then(function () { button.disabled = false; });
  });
})();
