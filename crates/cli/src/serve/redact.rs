//! The HTTP error boundary: no error body names an absolute path of the server's machine.
//!
//! The core's messages aim to be root-relative already; this is the guard behind them. In
//! every answer with status 400 or above, the root (as configured and canonical) followed
//! by `/` is cut off, leaving the root-relative path; the root alone becomes `<root>`; any
//! other absolute path becomes `<path>`.

use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;

/// Error bodies larger than this are replaced whole (ours are a few hundred bytes; a deploy
/// document with 50 diagnostics a few KiB).
const MAX_ERROR_BODY: usize = 4 * 1024 * 1024;

/// The spellings of the root to cut off, longest first.
#[derive(Clone, Debug)]
pub struct RootForms(Vec<String>);

impl RootForms {
    pub fn new(root: &Path) -> Self {
        let mut forms = vec![root.to_string_lossy().into_owned()];
        if let Ok(canonical) = root.canonicalize() {
            forms.push(canonical.to_string_lossy().into_owned());
        }
        let mut forms: Vec<String> = forms
            .into_iter()
            .map(|f| f.trim_end_matches('/').to_owned())
            .filter(|f| f.starts_with('/') && f.len() > 1)
            .collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Self(forms)
    }

    /// `text` with the root and every other absolute path taken out.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for root in &self.0 {
            text = text.replace(&format!("{root}/"), "");
            text = text.replace(root.as_str(), "<root>");
        }
        redact_absolute_paths(&text)
    }
}

/// Replaces every `/…` that starts a word (after the start, whitespace, a quote or an
/// opening bracket) and continues with a path character by `<path>`.
fn redact_absolute_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let mut previous: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        let starts_word = previous
            .is_none_or(|p| p.is_whitespace() || matches!(p, '"' | '\'' | '(' | '[' | '`' | '='));
        let next_is_path = text[i + c.len_utf8()..]
            .chars()
            .next()
            .is_some_and(|n| n.is_alphanumeric() || matches!(n, '.' | '_' | '-' | '~'));
        if c == '/' && starts_word && next_is_path {
            out.push_str("<path>");
            let mut last = c;
            while let Some(&(_, n)) = chars.peek() {
                if n.is_whitespace() || matches!(n, '"' | '\'' | ')' | ']' | '`' | ',' | ';' | '\\')
                {
                    break;
                }
                // A trailing `:` begins "path: message" or "path:line:col".
                if n == ':' {
                    break;
                }
                last = n;
                chars.next();
            }
            previous = Some(last);
            continue;
        }
        out.push(c);
        previous = Some(c);
    }
    out
}

/// Middleware: redacts the body of every answer with status 400 or above.
pub async fn redact_errors(State(forms): State<RootForms>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if response.status().as_u16() < 400 {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => {
            r#"{"status":"failed","error":"error body too large","error_kind":"io","exit_code":4}"#
                .to_owned()
        }
    };
    let redacted = forms.redact(&text);
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(redacted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_becomes_relative_and_other_absolute_paths_go() {
        let forms = RootForms(vec!["/srv/root".into()]);
        assert_eq!(
            forms.redact(r#"{"error":"cannot open /srv/root/agents/a.py: denied"}"#),
            r#"{"error":"cannot open agents/a.py: denied"}"#
        );
        assert_eq!(
            forms.redact(r#"{"error":"bad id \"é\" at /x/ü"}"#),
            r#"{"error":"bad id \"é\" at <path>"}"#
        );
        assert_eq!(
            forms.redact("root /srv/root is gone"),
            "root <root> is gone"
        );
        assert_eq!(
            forms.redact(r#"{"error":"/etc/passwd is outside the root (/tmp/x)"}"#),
            r#"{"error":"<path> is outside the root (<path>)"}"#
        );
        assert_eq!(
            forms.redact("and/or 3/4 http://host/x a.py:1:2"),
            "and/or 3/4 http://host/x a.py:1:2"
        );
        assert_eq!(forms.redact("'/var/lib/x': gone"), "'<path>': gone");
    }
}
