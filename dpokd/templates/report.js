(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var view = document.getElementById("f-view"), system = document.getElementById("f-system"),
      status = document.getElementById("f-status"), text = document.getElementById("f-text");
  var examples = Array.prototype.slice.call(document.querySelectorAll("details.example"));
  var lowered = new Map();
  function haystack(el) {
    if (!lowered.has(el)) lowered.set(el, el.textContent.toLowerCase());
    return lowered.get(el);
  }
  function fromHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (params.has("view")) view.value = params.get("view");
    if (params.has("system")) system.value = params.get("system");
    if (params.has("status")) status.value = params.get("status");
    if (params.has("q")) text.value = params.get("q");
  }
  function toHash() {
    var params = new URLSearchParams();
    if (view.value !== "all") params.set("view", view.value);
    if (system.value) params.set("system", system.value);
    if (status.value) params.set("status", status.value);
    if (text.value) params.set("q", text.value);
    history.replaceState(null, "", "#" + params.toString());
  }
  function apply() {
    var v = view.value, s = system.value, st = status.value, q = text.value.toLowerCase(), shown = 0;
    examples.forEach(function (el) {
      var show = true, keep = null;
      if (v === "regressions" || v === "fixed") {
        var hits = JSON.parse(v === "regressions" ? el.dataset.regressed : el.dataset.fixed);
        show = s ? hits.indexOf(s) >= 0 : hits.length > 0;
        if (s) keep = [s, "teacher", (data.previous[el.dataset.run] || {})[s]];
      } else if (s) {
        keep = [s, "teacher"];
      }
      var answers = el.querySelectorAll(".answer, .verdict"), visible = 0;
      answers.forEach(function (a) {
        var ok = (!keep || keep.indexOf(a.dataset.system) >= 0) && (!st || a.classList.contains("verdict") || a.dataset.status === st);
        a.hidden = !ok;
        if (ok && a.classList.contains("answer") && (!s || a.dataset.system === s) && (!st || a.dataset.status === st)) visible++;
      });
      if ((s || st) && visible === 0) show = false;
      if (show && q && haystack(el).indexOf(q) < 0) show = false;
      el.hidden = !show;
      if (show) shown++;
    });
    // A narrowed view opens its examples; the full list stays folded, to render fast.
    var narrowed = v !== "all" || q;
    examples.forEach(function (el) { el.open = Boolean(narrowed && !el.hidden && shown <= 20); });
    document.getElementById("shown-count").textContent = shown + " of " + examples.length + " examples shown";
  }
  [view, system, status].forEach(function (el) { el.addEventListener("change", function () { toHash(); apply(); }); });
  text.addEventListener("input", function () { toHash(); apply(); });
  window.addEventListener("hashchange", function () { fromHash(); apply(); });
  fromHash();
  apply();
})();
