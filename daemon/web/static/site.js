// contactsync staff pages: small enhancements only; every page works without this file.
// A filter change reloads the Sync Log at once (the Filter button stays for keyboards and
// for browsers without scripts).
document.addEventListener("change", (event) => {
  const form = event.target.closest("form.filters");
  if (form && event.target.tagName === "SELECT") form.requestSubmit();
});
