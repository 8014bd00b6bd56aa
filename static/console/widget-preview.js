/*
 * The widget key page's live preview: the real widget (voiceplatform-widget.js, loaded with
 * data-auto="false") drawn inside #widget-preview in preview mode (a look, never a
 * conversation), redrawn from the appearance form's inputs ([data-preview]) as they change.
 * A static file, so the console's CSP (no inline script) holds.
 */
(function () {
  "use strict";
  var box = document.getElementById("widget-preview");
  if (!box || !window.VoicePlatformWidget) return;
  var inputs = document.querySelectorAll("[data-preview]");

  function current() {
    var appearance = {};
    for (var i = 0; i < inputs.length; i++) {
      appearance[inputs[i].getAttribute("data-preview")] = inputs[i].value;
    }
    return appearance;
  }

  window.VoicePlatformWidget.init({ container: box, preview: true, appearance: current() });
  window.VoicePlatformWidget.open();
  for (var i = 0; i < inputs.length; i++) {
    inputs[i].addEventListener("input", function () {
      window.VoicePlatformWidget.setAppearance(current());
    });
    inputs[i].addEventListener("change", function () {
      window.VoicePlatformWidget.setAppearance(current());
    });
  }
})();
