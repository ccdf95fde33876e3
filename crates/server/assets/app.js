// Voronka UI behaviour. Loaded as a file (the Content-Security-Policy allows no inline
// script); every request it makes carries the session's CSRF token.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function flash(text, isError) {
    var el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.className = isError ? "flash errors" : "flash";
  }

  function post(url, fields) {
    var body = new URLSearchParams();
    Object.keys(fields).forEach(function (k) { if (fields[k] != null && fields[k] !== "") body.append(k, fields[k]); });
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
      body: body
    }).then(function (r) {
      return r.json().catch(function () { return { ok: false, message: r.status + " " + r.statusText }; });
    });
  }

  // The language switch returns to the page it was pressed on.
  document.querySelectorAll("[data-current-path]").forEach(function (el) {
    el.value = location.pathname + location.search;
  });

  // Copy buttons for embed codes and new tokens.
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var src = document.getElementById(b.getAttribute("data-copy"));
      if (!src) return;
      src.select();
      if (navigator.clipboard) { navigator.clipboard.writeText(src.value).catch(function () { document.execCommand("copy"); }); }
      else { document.execCommand("copy"); }
    });
  });

  // Forms that ask before they act.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) { if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault(); });
  });

  // The state form shows the reason list (or the date) the chosen state needs.
  function showReasons(scope, status) {
    scope.querySelectorAll(".reason").forEach(function (el) {
      el.classList.toggle("show", el.classList.contains("reason-" + status));
    });
  }
  var statusSelect = document.getElementById("status-select");
  if (statusSelect) {
    var form = statusSelect.form;
    statusSelect.addEventListener("change", function () { showReasons(form, statusSelect.value); });
    showReasons(form, statusSelect.value);
  }
  // The direction applies to calls only.
  var kind = document.getElementById("activity-kind"), dir = document.getElementById("activity-direction");
  if (kind && dir) {
    var sync = function () { dir.disabled = kind.value !== "call"; };
    kind.addEventListener("change", sync); sync();
  }

  // Charts: each canvas carries its Chart.js configuration as JSON.
  function drawCharts() {
    if (!window.Chart) return;
    var palette = ["#2f6fed", "#16a34a", "#f59e0b", "#e5484d", "#8b5cf6", "#0ea5e9", "#f97316", "#14b8a6", "#a855f7", "#64748b", "#84cc16", "#ec4899", "#6366f1"];
    document.querySelectorAll("canvas[data-chart]").forEach(function (c) {
      var cfg;
      try { cfg = JSON.parse(c.getAttribute("data-chart")); } catch (e) { return; }
      (cfg.data.datasets || []).forEach(function (d, i) {
        if (cfg.type === "doughnut") { d.backgroundColor = ["#16a34a", "#e5484d"]; }
        else if (cfg.data.datasets.length === 1) { d.backgroundColor = palette[0]; }
        else { d.backgroundColor = palette[i % palette.length]; }
      });
      new window.Chart(c, cfg);
      c.setAttribute("data-drawn", "1");
    });
  }
  drawCharts();

  // Kanban: drag a card with the pointer (mouse, pen or touch) to another column.
  var board = document.getElementById("kanban");
  if (board) {
    var drag = null;
    var dialog = document.getElementById("move-dialog");

    function columnAt(x, y) {
      var el = document.elementFromPoint(x, y);
      return el ? el.closest(".kcol") : null;
    }
    function setCount(col, delta) {
      var c = col.querySelector("[data-count]");
      if (c) c.textContent = String(Math.max(0, parseInt(c.textContent, 10) + delta));
    }
    function ask(status) {
      // refused and junk need a reason, postponed a date: ask in the dialog.
      return new Promise(function (resolve) {
        if (["refused", "junk", "postponed"].indexOf(status) < 0 || !dialog) { resolve({}); return; }
        showReasons(dialog, status);
        dialog.returnValue = "";
        dialog.addEventListener("close", function onClose() {
          dialog.removeEventListener("close", onClose);
          if (dialog.returnValue !== "ok") { resolve(null); return; }
          if (status === "postponed") resolve({ until: document.getElementById("kanban-until").value });
          else resolve({ reason: document.getElementById("kanban-reason-" + status).value });
        });
        dialog.showModal();
      });
    }
    function drop(card, from, to) {
      var status = to.getAttribute("data-status");
      ask(status).then(function (extra) {
        if (!extra) return;
        var fields = { id: card.getAttribute("data-id"), status: status, reason: extra.reason, until: extra.until };
        return post("/kanban/move", fields).then(function (res) {
          if (res && res.ok) {
            to.querySelector(".kcards").prepend(card);
            card.setAttribute("data-status", status);
            setCount(from, -1); setCount(to, 1);
            flash(board.getAttribute("data-moved") || "✓", false);
          } else {
            var text = (res && res.message) || "error";
            if (res && res.details && res.details.length) text += " — " + res.details.join("; ");
            flash(text, true);
          }
        });
      }).catch(function (e) { flash(String(e), true); });
    }
    // A press becomes a drag once the pointer moves a few pixels; a plain click still
    // opens the card's link.
    board.addEventListener("pointerdown", function (e) {
      var card = e.target.closest(".kcard");
      if (!card || e.button !== 0) return;
      drag = { card: card, from: card.closest(".kcol"), x: e.clientX, y: e.clientY, ghost: null, over: null };
    });
    document.addEventListener("pointermove", function (e) {
      if (!drag) return;
      if (!drag.ghost) {
        if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) < 6) return;
        drag.ghost = drag.card.cloneNode(true);
        drag.ghost.classList.add("kghost");
        document.body.appendChild(drag.ghost);
        drag.card.classList.add("dragging");
      }
      e.preventDefault();
      drag.ghost.style.left = e.clientX + 8 + "px"; drag.ghost.style.top = e.clientY + 8 + "px";
      var col = columnAt(e.clientX, e.clientY);
      if (drag.over && drag.over !== col) drag.over.classList.remove("drop");
      if (col) col.classList.add("drop");
      drag.over = col;
    });
    document.addEventListener("pointerup", function (e) {
      if (!drag) return;
      var d = drag; drag = null;
      if (!d.ghost) return;
      d.ghost.remove(); d.card.classList.remove("dragging");
      if (d.over) d.over.classList.remove("drop");
      // The click that ends a drag does not follow the link.
      var swallow = function (ev) { ev.preventDefault(); ev.stopPropagation(); };
      document.addEventListener("click", swallow, true);
      setTimeout(function () { document.removeEventListener("click", swallow, true); }, 0);
      var to = columnAt(e.clientX, e.clientY);
      if (to && to !== d.from) drop(d.card, d.from, to);
    });
  }
})();
