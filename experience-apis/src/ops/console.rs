//! `GET /ops`: the ops console, one HTML page with its script and style
//! inline and nothing from elsewhere. The page itself is public; everything
//! it shows comes from `/ops/v1/...`, which needs an operator's token that
//! the operator pastes into it (kept in the tab's session storage).
//!
//! The page's script and style run under a fresh nonce per answer, so the
//! policy needs no `'unsafe-inline'`: were data ever to slip into the page
//! as markup, it could not run.

use axum::{
    extract::State,
    response::{Html, IntoResponse, Response},
};
use http::header;

use crate::Upstreams;

/// The page, with `{{nonce}}` and `{{trace_url}}` to fill in.
const PAGE: &str = include_str!("console.html");

/// `GET /ops`
pub async fn page(State(upstreams): State<Upstreams>) -> Response {
    let nonce = format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new());
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let trace_url = upstreams.trace_url_template.as_deref().map(attribute).unwrap_or_default();
    let html = PAGE.replace("{{nonce}}", &nonce).replace("{{trace_url}}", &trace_url);
    ([(header::CONTENT_SECURITY_POLICY, policy)], Html(html)).into_response()
}

/// `text` fit for a double-quoted HTML attribute.
fn attribute(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_and_the_template_cannot_leave_its_attribute() {
        assert_eq!(PAGE.matches("{{nonce}}").count(), 2, "one script, one style");
        assert_eq!(PAGE.matches("{{trace_url}}").count(), 1);
        assert_eq!(
            attribute(r#"https://t.example/{trace_id}?a=1&b="x"<"#),
            "https://t.example/{trace_id}?a=1&amp;b=&quot;x&quot;&lt;"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["src=\"http", "href=\"http", "@import", "url(", "<link"] {
            assert!(!PAGE.contains(outside), "{outside}");
        }
        // Data becomes text, never markup.
        assert!(!PAGE.contains("innerHTML") && !PAGE.contains("insertAdjacentHTML") && !PAGE.contains("eval("));
    }
}
