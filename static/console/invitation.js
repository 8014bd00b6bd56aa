// The invitation page: an invitation link carries its token in the fragment
// (/invitations/#vp_inv_…), which browsers never send to a server, so it reaches no access log.
// This script moves the token into the page's CSRF-protected form and posts it (the server keeps
// only its hash, in this browser's session), after wiping it from the address bar and history.
(function () {
  "use strict";
  var form = document.getElementById("invitation-token-form");
  var token = window.location.hash.slice(1);
  if (!form || token.indexOf("vp_inv_") !== 0) {
    return;
  }
  window.history.replaceState(null, "", window.location.pathname);
  form.elements.token.value = token;
  form.submit();
})();
