// Tollgate's pages under Clerk (AUTH_PROVIDER=clerk). Clerk's browser SDK and UI are loaded by the
// page from the instance's Frontend API; this script starts them and then either mounts Clerk's
// sign-in (with sign-up) or, on /auth/refresh, lets the SDK renew the session token and goes back.
window.addEventListener('load', async () => {
  const mount = document.getElementById('clerk-mount');
  const next = mount.dataset.next || '/dashboard';
  try {
    await window.Clerk.load({ ui: { ClerkUI: window.__internal_ClerkUICtor }, afterSignOutUrl: '/' });
  } catch (e) {
    mount.textContent = 'Signing in is unavailable right now. Reload the page to try again.';
    return;
  }
  if (mount.dataset.mode === 'refresh') {
    // Loading renewed the token; the server counts a second refresh within seconds as signed out.
    window.location.replace(window.Clerk.session ? next : `/auth?next=${encodeURIComponent(next)}`);
  } else if (window.Clerk.session) {
    window.location.replace(next);
  } else {
    window.Clerk.mountSignIn(mount, { forceRedirectUrl: next, signUpForceRedirectUrl: next, withSignUp: true });
  }
});
