// The console's only script (the Content-Security-Policy allows no inline script).
// It adds conveniences; every page and action works without it.
"use strict";

(function () {
  // Live refresh: an element with data-live-src is refilled from that URL (a fragment
  // the server rendered and escaped) every data-live-every milliseconds.
  const live = document.querySelector("[data-live-src]");
  const status = document.getElementById("live-status");
  if (live) {
    const source = live.dataset.liveSrc;
    const every = Math.max(1000, Number(live.dataset.liveEvery) || 3000);
    const refresh = async function () {
      try {
        const response = await fetch(source, {
          credentials: "same-origin",
          cache: "no-store",
          headers: { Accept: "text/html" },
        });
        if (response.status === 401) {
          if (status) status.textContent = "signed out: reload the page to sign in again";
          return; // stop polling
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
        live.replaceChildren(...Array.from(parsed.body.childNodes, (n) => document.importNode(n, true)));
        if (status) status.textContent = "live · updated " + new Date().toLocaleTimeString();
      } catch (error) {
        if (status) status.textContent = "refresh failed (" + error.message + "); trying again";
      }
      window.setTimeout(refresh, every);
    };
    window.setTimeout(refresh, every);
  }

  // "Select all" boxes: data-select-all names the checkboxes they drive.
  document.querySelectorAll("input[data-select-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[type="checkbox"][name="' + all.dataset.selectAll + '"]')
        .forEach(function (box) { box.checked = all.checked; });
    });
  });

  // Sign-in link printed by `emotionviz console`: /login#token=... The fragment never
  // reaches a server or a log; it is read here, removed from the address, and sent once.
  const token = document.getElementById("token");
  if (token && window.location.hash.indexOf("#token=") === 0) {
    token.value = decodeURIComponent(window.location.hash.slice("#token=".length));
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    token.form.submit();
  }
})();
