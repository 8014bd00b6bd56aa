// The password-reset page: the mailed link carries "<uid>/<token>" in the fragment
// (/reset/#MQ/c4x2k1-…), which browsers never send to a server, so it reaches no access log.
// This script posts it in the page's CSRF-protected form after wiping it from the address bar.
(function () {
  "use strict";
  var form = document.getElementById("password-reset-link-form");
  var link = window.location.hash.slice(1);
  if (!form || !/^[0-9A-Za-z_-]+\/[0-9A-Za-z]+-[0-9A-Za-z]+$/.test(link)) {
    return;
  }
  window.history.replaceState(null, "", window.location.pathname);
  form.elements.link.value = link;
  form.submit();
})();
