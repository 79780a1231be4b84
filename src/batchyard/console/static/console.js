// batchyard console: the little the pages need beyond htmx. No inline handlers (CSP).
// 1. <time datetime="…Z" data-local> shows its time in the browser's zone; the server wrote
//    the UTC text, which stays in the title (hover).
// 2. <button data-confirm="Question?"> asks before its form is sent (the server has its own
//    confirmation page for pages without JavaScript).
(function () {
  "use strict";

  function localTimes(root) {
    if (!root || !root.querySelectorAll) return;
    var found = root.querySelectorAll("time[datetime][data-local]");
    for (var i = 0; i < found.length; i++) {
      var element = found[i];
      var when = new Date(element.getAttribute("datetime"));
      if (isNaN(when.getTime())) continue;
      if (!element.title) element.title = element.textContent;
      element.textContent = when.toLocaleString();
    }
  }

  function confirmFirst(event) {
    var button = event.submitter;
    if (!button || !button.hasAttribute("data-confirm")) return;
    if (!window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();  // htmx listens after us (capture phase here)
    }
  }

  function swapped() {
    // The whole page: an outerHTML swap's target is already detached; a page holds few times.
    localTimes(document);
  }

  document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
  document.addEventListener("htmx:load", swapped);
  document.addEventListener("htmx:afterSwap", swapped);
  document.addEventListener("submit", confirmFirst, true);
})();
