// Tollgate's pages under Clerk (AUTH_PROVIDER=clerk). Clerk's browser SDK and UI are loaded by the
// page from the instance's Frontend API; this script starts them and mounts Clerk's sign-in (with
// sign-up), or goes on to `next` when the browser is signed in already. (A stale session token
// never comes here: the server sends that page load through Clerk's handshake.)
window.addEventListener('load', async () => {
  const mount = document.getElementById('clerk-mount');
  const next = mount.dataset.next || '/dashboard';
  try {
    await window.Clerk.load({ ui: { ClerkUI: window.__internal_ClerkUICtor }, afterSignOutUrl: '/' });
  } catch (e) {
    mount.textContent = 'Signing in is unavailable right now. Reload the page to try again.';
    return;
  }
  if (window.Clerk.session) {
    window.location.replace(next);
  } else {
    window.Clerk.mountSignIn(mount, { forceRedirectUrl: next, signUpForceRedirectUrl: next, withSignUp: true });
  }
});
