//! authgate's HTML pages: short, self-contained, every text escaped. They never reach an app.

use super::{Reason, Response, StatusCode};

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A whole page around `body` (HTML the caller escaped).
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">{body}</body></html>"
    )
}

/// A page about a login that did not work (or cannot work now), with a way to start again.
pub fn login_page(status: StatusCode, title: &str, message: &str, reason: Reason) -> Response {
    let t = html_escape(title);
    let body = document(
        &t,
        &format!(
            "<h1>{t}</h1><p>{}</p><p><a href=\"/\">Start again</a></p>",
            html_escape(message)
        ),
    );
    Response::html(status, body, reason)
}

/// The 403 page a browser sees: what was missing, and whom to ask.
pub fn forbidden_page(message: &str, reason: Reason) -> Response {
    let body = document(
        "Access denied",
        &format!(
            "<h1>Access denied</h1><p>{}</p>\
             <p>Ask an owner of the namespace to share it with you.</p>",
            html_escape(message)
        ),
    );
    Response::html(StatusCode::FORBIDDEN, body, reason)
}

/// A logout that did not show it came from this origin asks first: a form that POSTs back.
pub fn logout_confirm_page() -> Response {
    let body = document(
        "Log out",
        "<form method=\"post\" action=\"/authgate/logout\"><p>Log out of this site?</p>\
         <button id=\"logout\" type=\"submit\">Log out</button></form>",
    );
    Response::html(StatusCode::OK, body, Reason::LogoutConfirm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let page = forbidden_page("<script>x</script> & 'y'", Reason::NoRule);
        assert!(
            page.body
                .contains("&lt;script&gt;x&lt;/script&gt; &amp; &#39;y&#39;")
        );
        let page = login_page(StatusCode::UNAUTHORIZED, "a\"b", "<i>", Reason::LoginError);
        assert!(page.body.contains("<title>a&quot;b</title>"));
        assert!(page.body.contains("<p>&lt;i&gt;</p>"));
    }
}
