//! Credentials never reach logs or error messages: URLs are shown without their userinfo and
//! without query parameters that carry secrets (presigned URLs, SAS tokens, API keys).

use url::Url;

/// Query parameters that are secrets by name (presigned URLs, SAS tokens, OAuth).
const SECRET_QUERY_KEYS: &[&str] = &[
    "sig",
    "key",
    "code",
    "auth",
    "api_key",
    "apikey",
    "x-amz-credential",
    "x-goog-credential",
];
/// Parts of a parameter's name that mark it as a secret wherever they appear
/// (`client_secret`, `access_token`, `X-Amz-Signature`, `db_password`, ...).
const SECRET_KEY_PARTS: &[&str] = &["secret", "token", "password", "passwd", "signature"];

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_QUERY_KEYS.contains(&key.as_str())
        || SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// The URL as it may be shown: `https://***@host/path?token=***`.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() || shown.password().is_some() {
        let _ = shown.set_username("***");
        let _ = shown.set_password(None);
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret(&key) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Text that should be a URL, as it may be shown, even when it does not parse (a port out of
/// range, say): everything between `://` and the last `@` before the query is taken for
/// userinfo, and secret query parameters are masked.
pub(crate) fn redact_text(text: &str) -> String {
    if let Ok(url) = Url::parse(text) {
        return redact_url(&url);
    }
    let (address, query) = match text.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (text, None),
    };
    let mut shown = match address.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
            None => address.to_owned(),
        },
        None => address.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret(key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        shown = format!("{shown}?{}", pairs.join("&"));
    }
    shown
}

/// An error and its causes on one line, `error: cause: cause`, with every URL in it redacted:
/// what the log and `/health` show. A cause whose text its parent already quotes is not
/// repeated, and the causes of library errors (which may name URLs with credentials) are masked.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let shown = inner.to_string();
        if !text.contains(&shown) {
            text = format!("{text}: {shown}");
        }
        cause = inner.source();
    }
    redact_urls(&text)
}

/// Free text with every `scheme://...` word in it redacted as [`redact_text`] does.
fn redact_urls(text: &str) -> String {
    let quoting = |c: char| {
        matches!(
            c,
            '(' | ')' | '<' | '>' | '"' | '\'' | ',' | ';' | '.' | ':'
        )
    };
    text.split(' ')
        .map(|word| {
            let start = word.len() - word.trim_start_matches(quoting).len();
            let end = word.trim_end_matches(quoting).len().max(start);
            let core = &word[start..end];
            if core.contains("://") {
                format!("{}{}{}", &word[..start], redact_text(core), &word[end..])
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_userinfo_and_secret_parameters() {
        let url =
            Url::parse("https://alice:hunter2@host/m/1/model.onnx?X-Amz-Signature=abc&part=2")
                .unwrap();
        let shown = redact_url(&url);
        assert_eq!(
            shown,
            "https://***@host/m/1/model.onnx?X-Amz-Signature=***&part=2"
        );
        assert!(!shown.contains("hunter2") && !shown.contains("alice") && !shown.contains("abc"));
    }

    #[test]
    fn removes_oauth_secrets_and_credentials_from_urls_that_do_not_parse() {
        let url = Url::parse("https://host/cb?client_secret=abc&code=def&state=ok").unwrap();
        assert_eq!(
            redact_url(&url),
            "https://host/cb?client_secret=***&code=***&state=ok"
        );
        let broken = "https://alice:s3cretpw@host:99999/m/1/model.onnx?access_token=t0k&v=2";
        assert!(Url::parse(broken).is_err());
        assert_eq!(
            redact_text(broken),
            "https://***@host:99999/m/1/model.onnx?access_token=***&v=2"
        );
        assert_eq!(redact_text("/srv/models/m/1"), "/srv/models/m/1");
    }

    #[test]
    fn leaves_plain_urls_alone() {
        let url = Url::parse("s3://bucket/models/fraud/7").unwrap();
        assert_eq!(redact_url(&url), "s3://bucket/models/fraud/7");
    }

    #[test]
    fn error_chains_name_every_cause_once_and_redact_urls() {
        #[derive(Debug, thiserror::Error)]
        #[error("fetch failed: {source}")]
        struct Outer {
            source: Inner,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read (https://alice:pw@host/m?X-Amz-Signature=abc)")]
        struct Inner {
            source: std::io::Error,
        }
        let err = Outer {
            source: Inner {
                source: std::io::Error::other("connection reset"),
            },
        };
        assert_eq!(
            error_chain(&err),
            "fetch failed: cannot read (https://***@host/m?X-Amz-Signature=***): connection reset"
        );
    }
}
