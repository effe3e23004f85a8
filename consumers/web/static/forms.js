// A filter that submits its form when changed (no inline handlers: the pages' CSP runs only these files).
document.querySelectorAll("select[data-submit]").forEach(function (select) {
  select.addEventListener("change", function () { select.form.submit(); });
});
