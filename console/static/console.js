// The console's only script: live refresh of [data-live] regions, CSRF header on fetch,
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
  var regions = document.querySelectorAll("[data-live]");
  if (regions.length) {
    var every = parseInt(document.body.getAttribute("data-refresh") || "3000", 10);
    setInterval(function () {
      if (document.hidden) return;
      fetch(location.href, {credentials: "same-origin", headers: {"X-Requested-With": "refresh"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          regions.forEach(function (region) {
            var fresh = doc.getElementById(region.id);
            if (fresh && !busy(region)) region.innerHTML = fresh.innerHTML;
          });
        }).catch(function () {});
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
