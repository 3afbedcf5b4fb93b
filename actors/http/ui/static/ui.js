// The dashboard's live parts, without a library: an element with data-poll="URL" has
// its content replaced by what URL answers every data-every milliseconds; a <pre> with
// data-follow="URL" appends the job log from data-offset on. A 401 (logged out) loads
// the page again, which leads to the login page.
(function () {
  "use strict";

  function schedule(fn, ms) {
    // Not while the tab is hidden: a background tab polls nothing.
    window.setTimeout(function () {
      if (document.hidden) {
        document.addEventListener("visibilitychange", function again() {
          document.removeEventListener("visibilitychange", again);
          fn();
        });
      } else {
        fn();
      }
    }, ms);
  }

  function poll(el) {
    var url = el.getAttribute("data-poll");
    var every = parseInt(el.getAttribute("data-every") || "2000", 10);
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "X-Fragment": "1" } })
        .then(function (answer) {
          if (answer.status === 401) {
            window.location.reload();
            return null;
          }
          return answer.ok ? answer.text() : null;
        })
        .then(function (html) {
          if (html !== null) {
            el.innerHTML = html;
            el.setAttribute("data-updated", String(Date.now()));
            el.classList.remove("stale");
          }
        })
        .catch(function () {
          el.classList.add("stale");
        })
        .then(function () {
          schedule(tick, every);
        });
    }
    schedule(tick, every);
  }

  function follow(pre) {
    var url = pre.getAttribute("data-follow");
    var offset = parseInt(pre.getAttribute("data-offset") || "0", 10);
    var every = parseInt(pre.getAttribute("data-every") || "1000", 10);
    function tick() {
      fetch(url + "?offset=" + offset, {
        credentials: "same-origin",
        headers: { "X-Fragment": "1" },
      })
        .then(function (answer) {
          if (answer.status === 401) {
            window.location.reload();
            return null;
          }
          if (!answer.ok) return null;
          var next = parseInt(answer.headers.get("X-Log-Next") || String(offset), 10);
          return answer.text().then(function (text) {
            return { text: text, next: next };
          });
        })
        .then(function (piece) {
          if (piece && piece.text) {
            var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
            pre.appendChild(document.createTextNode(piece.text));
            offset = piece.next;
            pre.setAttribute("data-offset", String(offset));
            if (atEnd) pre.scrollTop = pre.scrollHeight;
          }
        })
        .catch(function () {})
        .then(function () {
          schedule(tick, every);
        });
    }
    pre.scrollTop = pre.scrollHeight;
    schedule(tick, every);
  }

  document.querySelectorAll("[data-poll]").forEach(poll);
  document.querySelectorAll("pre[data-follow]").forEach(follow);
})();
