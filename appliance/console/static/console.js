// Copy buttons (DNS records). The pages work without this file; it only saves typing.
document.addEventListener("click", function (e) {
  var b = e.target.closest("button.copy");
  if (!b || !navigator.clipboard) return;
  navigator.clipboard.writeText(b.dataset.copy).then(function () {
    var was = b.textContent;
    b.textContent = "Copied";
    setTimeout(function () { b.textContent = was; }, 1500);
  });
});
