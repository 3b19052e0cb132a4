// The sign-in dialog both pages share (#sign-in, #sign-in-form, #email, #password and their
// messages): showing it with a reason, and signing in with what it holds.
import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

/** Open the dialog, saying why when there is a reason, with the email field focused. */
export function showSignIn(reason) {
  const dialog = $("sign-in");
  $("sign-in-reason").hidden = !reason;
  $("sign-in-reason").textContent = reason || "";
  $("sign-in-error").hidden = true;
  if (!dialog.open) dialog.showModal();
  $("email").focus();
}

/**
 * Sign in when the form is submitted: POST /api/auth/login, then close the dialog and hand the
 * user to `onSignedIn`; a refusal is shown in the dialog. `beforeSubmit` runs first, inside the
 * user's gesture (the softphone unlocks its ringtone there).
 */
export function bindSignIn({ onSignedIn, beforeSubmit = () => {} }) {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    beforeSubmit();
    const form = event.target;
    const button = form.querySelector("button[type=submit]");
    const error = $("sign-in-error");
    error.hidden = true;
    button.disabled = true;
    try {
      const reply = await api("/api/auth/login", {
        method: "POST",
        body: { email: form.email.value, password: form.password.value },
      });
      form.password.value = "";
      $("sign-in").close();
      await onSignedIn(reply.user);
    } catch (failure) {
      error.textContent =
        failure.status === 401 ? "Email or password is wrong." : failure.message;
      error.hidden = false;
      form.password.focus();
    } finally {
      button.disabled = false;
    }
  });
}
