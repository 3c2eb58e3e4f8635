// Progressive enhancement: refresh the parts of a page marked data-refresh (the overview's
// tables, a replay's progress) by short polling. Without JavaScript the page is the same,
// refreshed by reloading it.
(function () {
  "use strict";
  if (!window.fetch) { return; }
  function poll(box) {
    var url = box.getAttribute("data-refresh");
    var every = parseInt(box.getAttribute("data-every"), 10) || 5000;
    function refresh() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (answer) {
          if (answer.ok && !answer.redirected) { return answer.text(); }
          throw new Error("refresh: " + answer.status);
        })
        .then(function (html) { box.innerHTML = html; })
        .catch(function () { /* keep what is shown; the next tick tries again */ })
        .then(function () { window.setTimeout(refresh, every); });
    }
    window.setTimeout(refresh, every);
  }
  var boxes = document.querySelectorAll("[data-refresh]");
  for (var i = 0; i < boxes.length; i += 1) { poll(boxes[i]); }
})();
