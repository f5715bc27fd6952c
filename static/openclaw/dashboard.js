// Small progressive helpers for every dashboard page; each page works without them.
(function () {
  "use strict";
  // The org switcher navigates on change (without script, its links do).
  document.querySelectorAll("select[data-navigate]").forEach(function (select) {
    select.addEventListener("change", function () { window.location.assign(select.value); });
  });
  // Copy buttons: <button data-copy="#element-id">.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        var label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });
  // Forms that change something irreversible ask first: <form data-confirm="Revoke this key?">.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
