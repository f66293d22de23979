// Passkeys (WebAuthn) for the sign-in, second-factor and account pages. Our own small file, served
// from 'self' (the CSP allows no inline script). Buttons carry their endpoints in data-* attributes;
// the server keeps the challenge, in the session, and checks everything.
(function () {
  "use strict";
  if (!window.PublicKeyCredential) return;

  const b64 = {
    decode(value) {
      const s = value.replace(/-/g, "+").replace(/_/g, "/");
      const raw = atob(s + "===".slice((s.length + 3) % 4));
      return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
    },
    encode(buffer) {
      const bytes = new Uint8Array(buffer);
      let raw = "";
      for (const byte of bytes) raw += String.fromCharCode(byte);
      return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    },
  };

  function csrfToken() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (data.location) window.location.assign(data.location);
      throw new Error(data.error || "Something went wrong. Please try again.");
    }
    return data;
  }

  function descriptors(list) {
    return (list || []).map((d) => ({ ...d, id: b64.decode(d.id) }));
  }

  function creationOptions(o) {
    return {
      ...o,
      challenge: b64.decode(o.challenge),
      user: { ...o.user, id: b64.decode(o.user.id) },
      excludeCredentials: descriptors(o.excludeCredentials),
    };
  }

  function requestOptions(o) {
    return { ...o, challenge: b64.decode(o.challenge), allowCredentials: descriptors(o.allowCredentials) };
  }

  function registrationJSON(credential) {
    const r = credential.response;
    return {
      id: credential.id,
      rawId: b64.encode(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: b64.encode(r.clientDataJSON),
        attestationObject: b64.encode(r.attestationObject),
        transports: r.getTransports ? r.getTransports() : [],
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment,
    };
  }

  function assertionJSON(credential) {
    const r = credential.response;
    return {
      id: credential.id,
      rawId: b64.encode(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: b64.encode(r.clientDataJSON),
        authenticatorData: b64.encode(r.authenticatorData),
        signature: b64.encode(r.signature),
        userHandle: r.userHandle ? b64.encode(r.userHandle) : null,
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment,
    };
  }

  function showError(error) {
    const box = document.getElementById("passkey-error");
    if (!box || (error && error.name === "AbortError")) return;
    box.textContent = error && error.name === "NotAllowedError"
      ? "The passkey request was cancelled or timed out."
      : (error && error.message) || "Something went wrong.";
    box.hidden = false;
  }

  // Sign in (or verify) with a passkey: options from the server, the browser's prompt, the answer back.
  async function assert(optionsUrl, verifyUrl, next, extra) {
    const options = requestOptions(await post(optionsUrl));
    const credential = await navigator.credentials.get({ publicKey: options, ...extra });
    const result = await post(verifyUrl, { credential: assertionJSON(credential), next });
    window.location.assign(result.location);
  }

  let conditional = null; // the login page's pending autofill request, aborted by the button

  document.querySelectorAll("[data-passkey-login]").forEach((button) => {
    const { optionsUrl, verifyUrl, next } = button.dataset;
    button.hidden = false;
    button.addEventListener("click", () => {
      if (conditional) conditional.abort();
      assert(optionsUrl, verifyUrl, next).catch(showError);
    });
    // Conditional UI: passkeys offered in the username field's autofill.
    if (PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then((available) => {
        if (!available) return;
        conditional = new AbortController();
        assert(optionsUrl, verifyUrl, next, { mediation: "conditional", signal: conditional.signal })
          .catch(showError);
      });
    }
  });

  document.querySelectorAll("[data-passkey-verify]").forEach((button) => {
    const { optionsUrl, verifyUrl, next } = button.dataset;
    button.addEventListener("click", () => assert(optionsUrl, verifyUrl, next).catch(showError));
  });

  document.querySelectorAll("[data-passkey-register]").forEach((button) => {
    const { optionsUrl, registerUrl } = button.dataset;
    button.addEventListener("click", async () => {
      try {
        const options = creationOptions(await post(optionsUrl));
        const credential = await navigator.credentials.create({ publicKey: options });
        const name = (document.getElementById("passkey-name") || {}).value || "";
        const result = await post(registerUrl, { credential: registrationJSON(credential), name });
        window.location.assign(result.location);
      } catch (error) {
        showError(error);
      }
    });
  });
})();
