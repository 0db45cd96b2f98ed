// The console's only script: live updates (a polled JSON of counts, [data-live] regions), CSRF header on fetch,
// select-all boxes, confirmations. No library.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');
  window.consoleFetch = function (url, options) {
    options = options || {};
    options.headers = Object.assign({"X-CSRF-Token": csrf ? csrf.content : ""}, options.headers || {});
    options.credentials = "same-origin";
    return fetch(url, options);
  };
  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /INPUT|TEXTAREA|SELECT/.test(active.tagName)) return true;
    return region.querySelector('input[type="checkbox"]:checked') !== null;
  }
  // Live pages. With data-poll on <body>, the script polls that small JSON (the run's counts)
  // with If-None-Match: an unchanged run answers 304 and nothing is redrawn; a changed one
  // updates the [data-k] cells and status bars from the JSON, then reloads the [data-live]
  // regions once, replacing only those whose HTML changed. Without data-poll, the regions are
  // reloaded every period (and again only the changed ones are replaced).
  var regions = document.querySelectorAll("[data-live]");
  var poll = document.body.getAttribute("data-poll");
  var every = parseInt(document.body.getAttribute("data-refresh") || "3000", 10);
  var etag = null;
  function lookup(data, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? v : v[k]; }, data);
  }
  function cells(data) {
    document.querySelectorAll("[data-k]").forEach(function (el) {
      var v = lookup(data, el.getAttribute("data-k"));
      var text = v == null ? (el.getAttribute("data-empty") || "0") : String(v);
      if (el.textContent !== text) el.textContent = text;
    });
    document.querySelectorAll("svg[data-bar]").forEach(function (bar) {
      var width = parseFloat(bar.getAttribute("data-width")), x = 0, total = data.total || 1;
      bar.querySelectorAll("rect[data-s]").forEach(function (r) {
        var n = (data.counts || {})[r.getAttribute("data-s")] || 0, w = n / total * width;
        r.setAttribute("x", x.toFixed(1)); r.setAttribute("width", w.toFixed(1));
        var t = r.querySelector("title"); if (t) t.textContent = r.getAttribute("data-s") + " " + n;
        x += w;
      });
    });
  }
  function reload() {
    fetch(location.href, {credentials: "same-origin", headers: {"X-Requested-With": "refresh"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (region) {
          var fresh = doc.getElementById(region.id);
          if (fresh && !busy(region) && fresh.innerHTML !== region.innerHTML) region.innerHTML = fresh.innerHTML;
        });
      }).catch(function () {});
  }
  function check() {
    var headers = {"X-Requested-With": "refresh"};
    if (etag) headers["If-None-Match"] = etag;
    fetch(poll, {credentials: "same-origin", headers: headers})
      .then(function (r) {
        if (r.status !== 200) return null;
        etag = r.headers.get("ETag");
        return r.json();
      })
      .then(function (data) {
        if (!data) return;
        if (!data.items) cells(data);
        if (regions.length) reload();  // the first answer too: the run may have changed since the page was drawn
      }).catch(function () {});
  }
  if (poll || regions.length) {
    setInterval(function () {
      if (document.hidden) return;
      if (poll) check(); else reload();
    }, every);
  }
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.matches && t.matches("input[data-select-all]")) {
      document.querySelectorAll('input[name="' + t.getAttribute("data-select-all") + '"]').forEach(function (b) {
        b.checked = t.checked;
      });
    }
    var form = t.form;
    if (form) {
      var picked = form.querySelectorAll('input[name="accounts"]:checked').length;
      form.querySelectorAll("button[data-needs-selection]").forEach(function (b) { b.disabled = picked === 0; });
      var count = form.querySelector("[data-selected-count]");
      if (count) count.textContent = picked;
    }
  });
  document.addEventListener("submit", function (e) {
    var b = e.submitter;
    var msg = (b && b.getAttribute("data-confirm")) || e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
})();
