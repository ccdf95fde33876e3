/* Voronka tracker: anonymous visitor id, page views and named actions, sent in batches.
   Embed: <script src="https://VORONKA/t.js" data-site-key="s_…" async></script>
   Actions: voronka.track("video_view", {name: "tour"}), or mark an element with
   data-voronka-event="download" (and data-voronka-name="price-list") to track its clicks.
   Трекер Voronka: анонимный идентификатор посетителя, просмотры страниц и действия. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.voronka) return;
  var key = script.getAttribute("data-site-key");
  if (!key) return;
  var base = script.getAttribute("data-endpoint") || new URL(script.src, location.href).origin;
  var endpoint = base + "/api/v1/events?site_key=" + encodeURIComponent(key);
  var COOKIE = "vk_vid";

  function readCookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var a = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  var vid = readCookie(COOKIE);
  try { vid = vid || localStorage.getItem(COOKIE); } catch (e) { /* storage may be off */ }
  if (!vid || !/^[A-Za-z0-9._:-]{1,100}$/.test(vid)) vid = newId();
  // First-party: the site's own cookie, a year, not sent to other sites.
  document.cookie = COOKIE + "=" + encodeURIComponent(vid) + "; path=/; max-age=31536000; SameSite=Lax" +
    (location.protocol === "https:" ? "; Secure" : "");
  try { localStorage.setItem(COOKIE, vid); } catch (e) { /* ignore */ }

  var queue = [];
  var timer = null;
  function flush(leaving) {
    if (timer) { clearTimeout(timer); timer = null; }
    while (queue.length) {
      var body = JSON.stringify({ site_key: key, visitor_id: vid, events: queue.splice(0, 50) });
      if (leaving && navigator.sendBeacon) {
        navigator.sendBeacon(endpoint, new Blob([body], { type: "text/plain" }));
      } else if (window.fetch) {
        fetch(endpoint, { method: "POST", body: body, headers: { "Content-Type": "text/plain" },
          mode: "cors", credentials: "omit", keepalive: true }).catch(function () { /* best effort */ });
      }
    }
  }
  function track(type, props) {
    props = props || {};
    var event = { type: String(type), url: location.href, at: new Date().toISOString() };
    if (props.name) event.name = String(props.name);
    var data = {};
    for (var k in props) if (k !== "name" && Object.prototype.hasOwnProperty.call(props, k)) data[k] = props[k];
    event.data = data;
    queue.push(event);
    if (queue.length >= 50) flush(false);
    else if (!timer) timer = setTimeout(function () { flush(false); }, 1000);
  }

  // Forms posting to Voronka carry the visitor id, so a filled form joins the visitor.
  function tagForms() {
    var forms = document.querySelectorAll("form");
    for (var i = 0; i < forms.length; i++) {
      var f = forms[i];
      if ((f.getAttribute("action") || "").indexOf("/f/") < 0) continue;
      var input = f.querySelector('input[name="visitor_id"]');
      if (!input) {
        input = document.createElement("input");
        input.type = "hidden";
        input.name = "visitor_id";
        f.appendChild(input);
      }
      input.value = vid;
    }
  }
  document.addEventListener("submit", function () { tagForms(); flush(true); }, true);
  document.addEventListener("click", function (e) {
    var el = e.target && e.target.closest ? e.target.closest("[data-voronka-event]") : null;
    if (el) track(el.getAttribute("data-voronka-event"), { name: el.getAttribute("data-voronka-name") || undefined });
  }, true);
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") flush(true); });
  window.addEventListener("pagehide", function () { flush(true); });

  window.voronka = { track: track, visitorId: function () { return vid; }, flush: function () { flush(false); } };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", tagForms); else tagForms();
  track("page_view", { title: document.title, referrer: document.referrer || undefined });
})();
