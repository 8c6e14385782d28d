"""The HTML the edge itself answers with: login, block, error and notice pages (spec §1.3, §1.8)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from importlib.resources import files
from string import Template

from .config import Branding, User

DEFAULT_BRAND = Branding()

_PAGE = Template(files("fakeedge").joinpath("templates/page.html").read_text(encoding="utf-8"))

FORBIDDEN_MESSAGE = "Forbidden. You don't have permission to view this. Please contact your system administrator."

# spec §1.2: the nginx-style 302 body Cloudflare sends is exactly these 143 bytes
FOUND_BODY = (
    b"<html>\r\n<head><title>302 Found</title></head>\r\n<body>\r\n"
    b"<center><h1>302 Found</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)


def page(title: str, body: str, brand: Branding = DEFAULT_BRAND) -> str:
    extra = ""
    if brand.background_color:
        extra += f" body {{ background: {brand.background_color}; }}"
    if brand.header_color:
        extra += f" h1, .brand {{ color: {brand.header_color}; }}"
    logo = f'<img class="logo" src="{escape(brand.logo_url)}" alt="" height="40">' if brand.logo_url else ""
    return _PAGE.substitute(
        title=escape(title),
        body=body,
        brand=escape(brand.name),
        button_color=brand.button_color,
        extra_css=extra,
        logo=logo,
    )


def login(
    app_name: str,
    users: Iterable[User],
    *,
    csrf: str,
    allow_any_email: bool,
    one_time_pin: bool,
    error: str = "",
    brand: Branding = DEFAULT_BRAND,
) -> str:
    """The fake SSO page: one button per persona and a typed-address form (spec §1.3)."""
    personas = "".join(
        f'<button class="persona" type="submit" name="email" value="{escape(u.email)}">'
        f"{escape(u.name or u.email)} <span class=muted>&lt;{escape(u.email)}&gt;</span></button>"
        for u in users
    )
    hidden = f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
    parts = [f"<h1>Log in to {escape(app_name)}</h1>"]
    if brand.description:
        parts.append(f'<p class="muted">{escape(brand.description)}</p>')
    if error:
        parts.append(f'<p class="error">{escape(error)}</p>')
    if personas:
        parts.append(f'<form method="post">{hidden}<p class="muted">Sign in as</p>{personas}</form>')
    if allow_any_email or not personas:
        label = "Send login code" if one_time_pin else "Sign in"
        parts.append(
            ("<hr>" if personas else "") + f'<form method="post">{hidden}<label for="email">Email</label>'
            f'<input id="email" name="email" type="email" required autocomplete="email" placeholder="you@example.com">'
            f'<button type="submit" name="action" value="typed">{label}</button></form>'
        )
    return page("Sign in ・ Cloudflare Access", "".join(parts), brand)


def one_time_pin(
    app_name: str, email: str, *, csrf: str, otp_id: str, error: str = "", brand: Branding = DEFAULT_BRAND
) -> str:
    """The code step of the one-time-PIN login; fakeedge prints the code in its log."""
    err = f'<p class="error">{escape(error)}</p>' if error else ""
    return page(
        "Sign in ・ Cloudflare Access",
        f"<h1>Log in to {escape(app_name)}</h1>{err}"
        f"<p>A code was sent to <b>{escape(email)}</b> (fakeedge printed it in its log).</p>"
        f'<form method="post"><input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="otp_id" value="{escape(otp_id)}">'
        f'<label for="code">Code</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required>'
        f'<button type="submit">Sign in</button></form>',
        brand,
    )


def justification(
    app_name: str, prompt: str | None, *, csrf: str, error: str = "", brand: Branding = DEFAULT_BRAND
) -> str:
    """The purpose-justification step after sign-in (spec §14.5): why the user needs the app.

    The form posts to the page's own URL, fragment included, so the redirects after it keep the
    URL fragment the user asked for (spec §14.6).
    """
    err = f'<p class="error">{escape(error)}</p>' if error else ""
    question = prompt or "Please enter a justification for accessing this application."
    return page(
        "Justification ・ Cloudflare Access",
        f"<h1>Access to {escape(app_name)}</h1>{err}<p id=prompt>{escape(question)}</p>"
        f'<form method="post"><input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<label for="justification">Justification</label>'
        f'<textarea id="justification" name="justification" maxlength="{JUSTIFICATION_LIMIT}" required></textarea>'
        f'<button type="submit">Submit</button></form>',
        brand,
    )


JUSTIFICATION_LIMIT = 1000


def approval(
    app_name: str, *, csrf: str, state: str, request_id: str = "", app_url: str = "", brand: Branding = DEFAULT_BRAND
) -> str:
    """Temporary authentication (spec §14.5): ask for access, or wait for an approver."""
    if state == "ask":
        body = (
            f"<h1>Request access to {escape(app_name)}</h1>"
            "<p id=approval>This application needs an approver's consent for each session.</p>"
            f'<form method="post"><input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<label for="approval_reason">Why do you need access?</label>'
            f'<textarea id="approval_reason" name="approval_reason" maxlength="{JUSTIFICATION_LIMIT}" required>'
            '</textarea><button type="submit">Request access</button></form>'
        )
    elif state == "pending":
        body = (
            f"<h1>Waiting for approval</h1><p id=approval>Your request <code id=request_id>{escape(request_id)}</code> "
            f"for {escape(app_name)} awaits an approver (the fakeedge control API: POST "
            "/cdn-cgi/fakeedge/approvals).</p>"
            f'<p><a id=check_again href="{escape(app_url)}">Check again</a></p>'
        )
    else:
        body = f"<h1>Request denied</h1><p id=approval>An approver refused access to {escape(app_name)}.</p>"
    return page("Temporary authentication ・ Cloudflare Access", body, brand)


AUTHENTICATOR_LABELS = {
    "totp": "Use my authenticator app",
    "security_key": "Use my security key",
    "biometrics": "Use biometrics",
}


def mfa(app_name: str, email: str, authenticators: Iterable[str], *, csrf: str, brand: Branding = DEFAULT_BRAND) -> str:
    """The fake authenticator of independent MFA (spec §14.5): one button per allowed factor,
    each of which succeeds (a development stand-in for TOTP, security keys and biometrics)."""
    buttons = "".join(
        f'<button type="submit" name="mfa" value="{escape(kind)}">{escape(AUTHENTICATOR_LABELS[kind])}</button>'
        for kind in authenticators
    )
    return page(
        "Verify ・ Cloudflare Access",
        f"<h1>Verify it is you</h1><p id=mfa_for>A second factor is required for {escape(app_name)} "
        f"(signed in as <b>{escape(email)}</b>). fakeedge's authenticator accepts every factor.</p>"
        f'<form method="post"><input type="hidden" name="csrf" value="{escape(csrf)}">{buttons}</form>',
        brand,
    )


def forbidden(
    aud: str,
    ray: str,
    message: str | None = None,
    brand: Branding = DEFAULT_BRAND,
    *,
    email: str | None = None,
    switch_url: str | None = None,
) -> str:
    """The block page with its hidden ``json_data`` (spec §1.8).

    Args:
        email: the refused identity, shown so the user sees who they are signed in as.
        switch_url: where "Sign in as someone else" leads: a logout that forgets the refused
            session and comes back to the sign-in page (Cloudflare's page offers a way to switch
            account too). None for refusals before any sign-in.
    """
    text = message or FORBIDDEN_MESSAGE
    # compact, as Cloudflare sends it: scripts detect a block by '"aud":"' (spec §14.7)
    data = json.dumps(
        {"message": text, "status_code": 403, "aud": aud, "ray_id": ray.split("-")[0]}, separators=(",", ":")
    )
    way_out = ""
    if email is not None:
        way_out += f'<p>Signed in as <b id="signed_in_as">{escape(email)}</b>.</p>'
    if switch_url is not None:
        way_out += f'<p><a id="switch_account" href="{escape(switch_url)}">Sign in as someone else</a></p>'
    return page(
        "Forbidden ・ Cloudflare Access",
        f"<h1>Forbidden</h1><p>{escape(text)}</p>{way_out}<p class=muted>Ray ID: <code>{escape(ray)}</code></p>"
        f'<div id="json_data" hidden>{escape(data, quote=False)}</div>',
        brand,
    )


def notice(title: str, message: str, ray: str = "", brand: Branding = DEFAULT_BRAND) -> str:
    ray_line = f"<p class=muted>Ray ID: <code>{escape(ray)}</code></p>" if ray else ""
    return page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>{ray_line}", brand)


def origin_error(status: int, title: str, host: str, ray: str, detail: str) -> str:
    """Cloudflare's origin error page (502 Bad gateway, 504 Gateway time-out)."""
    return page(
        f"{host} | {status}: {title}",
        f"<h1>Error {status} · {escape(title)}</h1>"
        f"<p>The web server reported a {escape(title.lower())} error.</p>"
        f"<p class=muted>{escape(detail)}</p><p class=muted>Ray ID: <code>{escape(ray)}</code> · {escape(host)}</p>",
    )


def launcher(team_domain: str, apps: Iterable[tuple[str, str]], ray: str) -> str:
    """The team domain's root: a link to each app, as Cloudflare's App Launcher lists them.

    Args:
        team_domain: this team domain's URL, named on the page.
        apps: (app name, URL) pairs, in config order.
    """
    items = "".join(
        f'<li><a href="{escape(url)}">{escape(name)}</a> <span class=muted>{escape(url)}</span></li>'
        for name, url in apps
    )
    listing = f"<ul>{items}</ul>" if items else "<p>No application has a host a browser can open.</p>"
    return page(
        "App Launcher ・ Cloudflare Access",
        f"<h1>Applications</h1><p class=muted>{escape(team_domain)} is the team domain: it serves the sign-in "
        f"pages and /cdn-cgi/access/*. Open an application:</p>{listing}"
        f"<p class=muted>Ray ID: <code>{escape(ray)}</code></p>",
    )


def unknown_app(ray: str) -> str:
    """The team-domain page for a login URL that names no app (spec §1.3)."""
    return notice(
        "Unable to find your Access application!",
        "It appears that you have attempted to reach an invalid URL. "
        "Please check the URL and try again, or contact your administrator.",
        ray,
    )
