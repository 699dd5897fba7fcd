//! Credentials never reach logs or error messages: URLs are shown without their userinfo and
//! without query parameters that carry secrets (presigned URLs, SAS tokens, API keys).

use url::Url;

const SECRET_QUERY_KEYS: &[&str] = &[
    "sig",
    "signature",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
];

/// The URL as it may be shown: `https://***@host/path?token=***`.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() || shown.password().is_some() {
        let _ = shown.set_username("***");
        let _ = shown.set_password(None);
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(key, value)| {
                let secret = SECRET_QUERY_KEYS.contains(&key.to_ascii_lowercase().as_str());
                (
                    key.into_owned(),
                    if secret {
                        "***".to_owned()
                    } else {
                        value.into_owned()
                    },
                )
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
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
    fn leaves_plain_urls_alone() {
        let url = Url::parse("s3://bucket/models/fraud/7").unwrap();
        assert_eq!(redact_url(&url), "s3://bucket/models/fraud/7");
    }
}
