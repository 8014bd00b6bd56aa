/*
 * Confirmation before a destructive action: a form (or the button that submits it) with a
 * data-confirm="question" attribute asks first; "Cancel" stops the submission. A static file
 * (the console's CSP allows no inline script); the POST stays the action on the server, so
 * without JavaScript the form still works as before.
 */
(function () {
  "use strict";
  document.addEventListener(
    "submit",
    function (event) {
      var form = event.target;
      var submitter = event.submitter;
      var question =
        (submitter && submitter.getAttribute("data-confirm")) ||
        (form && form.getAttribute && form.getAttribute("data-confirm"));
      if (question && !window.confirm(question)) {
        event.preventDefault();
        event.stopImmediatePropagation();
      }
    },
    true
  );
})();
