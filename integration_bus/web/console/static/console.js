// Progressive enhancement: refresh the overview's tables by short polling. Without
// JavaScript the page is the same, refreshed by reloading it.
(function () {
  "use strict";
  var box = document.getElementById("overview");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-refresh");
  var every = parseInt(box.getAttribute("data-every"), 10) || 5000;
  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (answer) {
        if (answer.ok && !answer.redirected) { return answer.text(); }
        throw new Error("overview: " + answer.status);
      })
      .then(function (html) { box.innerHTML = html; })
      .catch(function () { /* keep what is shown; the next tick tries again */ })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
