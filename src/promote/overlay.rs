//! An overlay's pinned model, found by meaning and edited as text.
//!
//! The pins are the guarded JSON 6902 operations of the overlay's Rollout patch: a `test` that
//! `/spec/template/spec/initContainers/0/env/N/name` is MODEL_NAME, MODEL_VERSION or
//! MODEL_SHA256, and a `replace` of `.../env/N/value`. They are read by parsing the YAML (and
//! the patch inside it), then located in the text and replaced at their byte spans: the reviewer
//! of the pull request sees one changed line per value, with every comment, key order and quote
//! left as its author wrote it, which re-serialising the YAML would not keep. The edited text is
//! parsed again and must read back as the pins asked for.

use std::{cmp::Reverse, ops::Range};

use serde::Deserialize;
use serde_json::Value;

pub(crate) const MODEL_NAME: &str = "MODEL_NAME";
pub(crate) const MODEL_VERSION: &str = "MODEL_VERSION";
pub(crate) const MODEL_SHA256: &str = "MODEL_SHA256";
/// The fetch-model init container's environment, as the base Rollout lays it out.
const ENV_PATH: &str = "/spec/template/spec/initContainers/0/env/";

/// Why an overlay's pins cannot be read or edited.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("not a readable kustomization: {0}")]
    Unreadable(String),
    #[error(
        "it pins {var} {count} times; an overlay must pin exactly one model, with a `test` that \
         {ENV_PATH}N/name is {var} followed by a `replace` of {ENV_PATH}N/value"
    )]
    PinCount { var: &'static str, count: usize },
    #[error("{var} is pinned to {found}, not to a string (quote the value)")]
    NotAString { var: &'static str, found: Value },
    #[error("cannot locate {var}'s value in the text: {reason}")]
    NotLocated { var: &'static str, reason: String },
    #[error("the edited text does not read back as pinning {0}")]
    ReadBack(String),
}

/// How a scalar was quoted, so that its replacement is quoted alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
}

/// A single-line scalar in the text: its value and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scalar {
    value: String,
    span: Range<usize>,
    style: Style,
}

/// One pinned environment value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pin {
    value: String,
    scalar: Scalar,
}

impl Pin {
    pub(crate) fn value(&self) -> &str {
        &self.value
    }
}

/// A kustomization's text and the model it pins.
#[derive(Debug, Clone)]
pub(crate) struct Overlay {
    text: String,
    pub(crate) name: Pin,
    pub(crate) version: Pin,
    /// Absent in an overlay written before digests were pinned.
    pub(crate) sha256: Option<Pin>,
}

impl Overlay {
    pub(crate) fn parse(text: String) -> Result<Overlay, OverlayError> {
        let operations = operations(&text)?;
        let items = items(&text);
        let required =
            |var| pin(&operations, &items, var)?.ok_or(OverlayError::PinCount { var, count: 0 });
        let name = required(MODEL_NAME)?;
        let version = required(MODEL_VERSION)?;
        let sha256 = pin(&operations, &items, MODEL_SHA256)?;
        Ok(Overlay {
            text,
            name,
            version,
            sha256,
        })
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The overlay pinning `version`, and `sha256` when given (the overlay must pin a digest
    /// for it to be set; the caller checks). Only the values' spans change.
    pub(crate) fn edit(
        &self,
        version: &str,
        sha256: Option<&str>,
    ) -> Result<Overlay, OverlayError> {
        let mut edits = vec![(&self.version, version)];
        if let (Some(pin), Some(digest)) = (&self.sha256, sha256) {
            edits.push((pin, digest));
        }
        edits.sort_by_key(|(pin, _)| Reverse(pin.scalar.span.start));
        let mut text = self.text.clone();
        for (pin, value) in edits.into_iter().filter(|(pin, value)| pin.value != *value) {
            text.replace_range(pin.scalar.span.clone(), &render(pin.scalar.style, value));
        }
        let edited = Overlay::parse(text)?;
        let digest_read = edited.sha256.as_ref().map(Pin::value);
        if edited.name.value != self.name.value
            || edited.version.value != version
            || sha256.is_some_and(|digest| digest_read != Some(digest))
        {
            return Err(OverlayError::ReadBack(format!(
                "version {version:?} and sha256 {sha256:?}"
            )));
        }
        Ok(edited)
    }
}

#[derive(Deserialize)]
struct Kustomization {
    #[serde(default)]
    patches: Vec<PatchEntry>,
}

#[derive(Deserialize)]
struct PatchEntry {
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    patch: Option<String>,
}

#[derive(Deserialize)]
struct Target {
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Operation {
    op: String,
    path: String,
    #[serde(default)]
    value: Value,
}

/// The operations of every inline patch of a Rollout.
fn operations(text: &str) -> Result<Vec<Operation>, OverlayError> {
    let unreadable = |err: serde_saphyr::Error| OverlayError::Unreadable(err.to_string());
    let kustomization: Kustomization = serde_saphyr::from_str(text).map_err(unreadable)?;
    let mut operations = Vec::new();
    for entry in kustomization.patches {
        let kind = entry.target.and_then(|target| target.kind);
        if let (Some("Rollout"), Some(patch)) = (kind.as_deref(), entry.patch) {
            let parsed: Vec<Operation> = serde_saphyr::from_str(&patch).map_err(unreadable)?;
            operations.extend(parsed);
        }
    }
    Ok(operations)
}

/// `N` of `{ENV_PATH}N/{field}`.
fn env_index(path: &str, field: &str) -> Option<usize> {
    let rest = path.strip_prefix(ENV_PATH)?.strip_suffix(field)?;
    rest.strip_suffix('/')?.parse().ok()
}

/// The guarded pin of `var`, if there is one, located in the text.
fn pin(
    operations: &[Operation],
    items: &[Item],
    var: &'static str,
) -> Result<Option<Pin>, OverlayError> {
    let guarded = operations
        .iter()
        .filter(|op| op.op == "test" && op.value == var)
        .filter_map(|op| env_index(&op.path, "name"));
    let pins: Vec<(usize, &Value)> = guarded
        .flat_map(|index| {
            operations
                .iter()
                .filter(move |op| op.op == "replace" && env_index(&op.path, "value") == Some(index))
                .map(move |op| (index, &op.value))
        })
        .collect();
    let [(index, value)] = pins[..] else {
        return match pins.len() {
            0 => Ok(None),
            count => Err(OverlayError::PinCount { var, count }),
        };
    };
    let value = value.as_str().ok_or_else(|| OverlayError::NotAString {
        var,
        found: value.clone(),
    })?;
    let scalar = locate(items, index, var)?;
    if scalar.value != value {
        let reason = format!("the text says {:?}, the YAML {value:?}", scalar.value);
        return Err(OverlayError::NotLocated { var, reason });
    }
    Ok(Some(Pin {
        value: value.to_owned(),
        scalar,
    }))
}

/// The `value` scalar of the one `replace` operation of `{ENV_PATH}{index}/value` in the text.
fn locate(items: &[Item], index: usize, var: &'static str) -> Result<Scalar, OverlayError> {
    let path = format!("{ENV_PATH}{index}/value");
    let replaces: Vec<&Item> = items
        .iter()
        .filter(|item| item.field("op") == Some("replace") && item.field("path") == Some(&path))
        .collect();
    let not_located = |reason: String| OverlayError::NotLocated { var, reason };
    let [item] = replaces[..] else {
        return Err(not_located(format!(
            "{} `replace` operations of {path} written as `- op: replace` items with \
             one-line scalars",
            replaces.len()
        )));
    };
    item.scalar("value")
        .cloned()
        .ok_or_else(|| not_located("its value is not a one-line scalar".to_owned()))
}

/// One item of a YAML block sequence whose entries are `key: value` lines, as text.
#[derive(Debug, Default)]
struct Item {
    fields: Vec<(String, Option<Scalar>)>,
}

impl Item {
    fn scalar(&self, key: &str) -> Option<&Scalar> {
        let (_, scalar) = self.fields.iter().find(|(name, _)| name == key)?;
        scalar.as_ref()
    }

    fn field(&self, key: &str) -> Option<&str> {
        self.scalar(key).map(|scalar| scalar.value.as_str())
    }

    /// Adds `key: value` written at byte `at`.
    fn add(&mut self, line: &str, at: usize) {
        let Some((key, rest)) = line.split_once(':') else {
            return;
        };
        if rest.is_empty() || rest.starts_with([' ', '\t']) {
            let value_at = at + key.len() + 1;
            self.fields.push((key.to_owned(), scalar(rest, value_at)));
        }
    }
}

/// Every block-sequence item (`- key: value` and the keys aligned below it) in the text.
fn items(text: &str) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    let mut column = None;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let at = start;
        start += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let rest = content.trim_start_matches(' ');
        let indent = content.len() - rest.len();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some(entry) = rest.strip_prefix("- ") {
            let key_column = content.len() - entry.trim_start_matches(' ').len();
            column = Some(key_column);
            items.push(Item::default());
            items
                .last_mut()
                .unwrap()
                .add(&content[key_column..], at + key_column);
        } else if column == Some(indent) {
            items.last_mut().unwrap().add(rest, at + indent);
        } else if column.is_some_and(|key_column| indent < key_column) {
            column = None;
        }
    }
    items
}

/// The one-line scalar at the start of `text` (which begins at byte `at`), followed by nothing
/// but a comment; `None` for anything else (block scalars, collections, escapes, anchors).
fn scalar(text: &str, at: usize) -> Option<Scalar> {
    let trimmed = text.trim_start();
    let at = at + text.len() - trimmed.len();
    let (value, len, style) = match trimmed.chars().next()? {
        '"' => {
            let inner = &trimmed[1..];
            let end = inner.find(['"', '\\'])?;
            if inner[end..].starts_with('\\') {
                return None;
            }
            (inner[..end].to_owned(), end + 2, Style::Double)
        }
        '\'' => {
            let end = single_quoted_end(&trimmed[1..])?;
            (
                trimmed[1..end + 1].replace("''", "'"),
                end + 2,
                Style::Single,
            )
        }
        '|' | '>' | '{' | '[' | '&' | '*' | '!' | '#' => return None,
        _ => {
            let end = trimmed.find(" #").unwrap_or(trimmed.len());
            let value = trimmed[..end].trim_end();
            (value.to_owned(), value.len(), Style::Plain)
        }
    };
    let after = trimmed[len..].trim_start();
    if !after.is_empty() && !after.starts_with('#') {
        return None;
    }
    Some(Scalar {
        value,
        span: at..at + len,
        style,
    })
}

/// Where a single-quoted scalar's closing quote is (`''` is an escaped quote).
fn single_quoted_end(inner: &str) -> Option<usize> {
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) != Some(&b'\'') {
                return Some(i);
            }
            i += 1;
        }
        i += 1;
    }
    None
}

/// `value` written in `style`; a plain scalar that YAML would read as a number, boolean or null
/// is double-quoted instead. Values are versions and hex digests, which need no escapes.
fn render(style: Style, value: &str) -> String {
    const NOT_STRINGS: [&str; 11] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "",
    ];
    let reads_as_string = value.starts_with(|c: char| c.is_ascii_alphabetic())
        && !NOT_STRINGS.contains(&value.to_ascii_lowercase().as_str());
    match style {
        Style::Single => format!("'{value}'"),
        Style::Plain if reads_as_string => value.to_owned(),
        _ => format!("\"{value}\""),
    }
}

/// A unified diff (no context lines) of an edit that changed lines in place, as `git apply
/// --unidiff-zero` takes it.
pub(crate) fn diff(path: &str, old: &str, new: &str) -> String {
    let mut out = format!("--- a/{path}\n+++ b/{path}\n");
    for (number, (before, after)) in old.lines().zip(new.lines()).enumerate() {
        if before != after {
            let line = number + 1;
            out += &format!("@@ -{line} +{line} @@\n-{before}\n+{after}\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const OTHER: &str = "a3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// A service overlay as k8s/services holds them, with a digest pinned.
    fn overlay(version: &str, sha256: &str) -> String {
        format!(
            "# fraud-detection in staging.\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             resources:\n  - ../../../overlays/staging\n\
             patches:\n  - target:\n      kind: Rollout\n      name: pinserve\n    patch: |-\n\
             \x20     - op: test\n        path: /spec/template/spec/initContainers/0/name\n        value: fetch-model\n\
             \x20     - op: test\n        path: {ENV_PATH}0/name\n        value: MODEL_NAME\n\
             \x20     - op: replace\n        path: {ENV_PATH}0/value\n        value: fraud-detection\n\
             \x20     - op: test\n        path: {ENV_PATH}1/name\n        value: MODEL_VERSION\n\
             \x20     - op: replace\n        path: {ENV_PATH}1/value\n        value: {version}\n\
             \x20     - op: test\n        path: {ENV_PATH}2/name\n        value: MODEL_SHA256\n\
             \x20     - op: replace\n        path: {ENV_PATH}2/value\n        value: {sha256}\n"
        )
    }

    /// The lines that differ between two texts of as many lines.
    fn changed_lines(old: &str, new: &str) -> Vec<(String, String)> {
        assert_eq!(old.lines().count(), new.lines().count());
        old.lines()
            .zip(new.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    #[test]
    fn reads_the_pins() {
        let overlay = Overlay::parse(overlay("\"8\"", DIGEST)).unwrap();
        assert_eq!(overlay.name.value(), "fraud-detection");
        assert_eq!(overlay.version.value(), "8");
        assert_eq!(overlay.sha256.unwrap().value(), DIGEST);
    }

    #[test]
    fn edits_only_the_values_and_keeps_their_quotes() {
        let text = overlay("\"8\"", &format!("'{DIGEST}'"));
        let edited = Overlay::parse(text.clone())
            .unwrap()
            .edit("9", Some(OTHER))
            .unwrap();
        assert_eq!(
            changed_lines(&text, edited.text()),
            [
                ("        value: \"8\"".into(), "        value: \"9\"".into()),
                (
                    format!("        value: '{DIGEST}'"),
                    format!("        value: '{OTHER}'")
                ),
            ]
        );
        assert_eq!(edited.version.value(), "9");
    }

    #[test]
    fn comments_order_and_spacing_survive_byte_for_byte() {
        let text = overlay("\"8\"   # the canary's version", DIGEST)
            .replace("- op: replace\n        path: /spec/template/spec/initContainers/0/env/1/value\n        value",
                "- path: /spec/template/spec/initContainers/0/env/1/value\n        # why: a comment inside\n        op: replace\n        value")
            + "# trailing comment\n";
        let edited = Overlay::parse(text.clone())
            .unwrap()
            .edit("10", None)
            .unwrap();
        let expected = text.replace("\"8\"   #", "\"10\"   #");
        assert_eq!(edited.text(), expected);
    }

    #[test]
    fn plain_scalars_stay_plain_unless_yaml_would_read_a_number() {
        assert_eq!(render(Style::Plain, DIGEST), DIGEST);
        assert_eq!(render(Style::Plain, "9"), "\"9\"");
        assert_eq!(render(Style::Plain, "1e5ab"), "\"1e5ab\"");
        assert_eq!(render(Style::Plain, "no"), "\"no\"");
        assert_eq!(render(Style::Double, "v2"), "\"v2\"");
        let text = overlay("\"8\"", "\"\"");
        let edited = Overlay::parse(text)
            .unwrap()
            .edit("8", Some(DIGEST))
            .unwrap();
        assert_eq!(edited.sha256.unwrap().value(), DIGEST);
    }

    #[test]
    fn an_overlay_without_a_digest_pin_still_reads() {
        let text = overlay("\"8\"", DIGEST);
        let cut = text
            .find("      - op: test\n        path: /spec/template/spec/initContainers/0/env/2")
            .unwrap();
        let overlay = Overlay::parse(text[..cut].to_owned()).unwrap();
        assert!(overlay.sha256.is_none());
        assert_eq!(overlay.edit("9", None).unwrap().version.value(), "9");
        assert!(matches!(
            overlay.edit("9", Some(DIGEST)),
            Err(OverlayError::ReadBack(_))
        ));
    }

    /// The variable a pin count error names, and the count.
    fn pin_count(text: String) -> Option<(&'static str, usize)> {
        match Overlay::parse(text) {
            Err(OverlayError::PinCount { var, count }) => Some((var, count)),
            _ => None,
        }
    }

    #[test]
    fn refuses_overlays_that_do_not_pin_exactly_one_model() {
        let text = overlay("\"8\"", DIGEST);
        let twice = text.clone()
            + "  - target:\n      kind: Rollout\n    patch: |-\n\
               \x20     - op: test\n        path: /spec/template/spec/initContainers/0/env/5/name\n        value: MODEL_VERSION\n\
               \x20     - op: replace\n        path: /spec/template/spec/initContainers/0/env/5/value\n        value: \"3\"\n";
        assert_eq!(pin_count(twice), Some((MODEL_VERSION, 2)));
        let unguarded = text.replace("value: MODEL_NAME", "value: SOMETHING_ELSE");
        assert_eq!(pin_count(unguarded), Some((MODEL_NAME, 0)));
    }

    #[test]
    fn refuses_values_it_cannot_edit_in_place() {
        let number = Overlay::parse(overlay("8", DIGEST)).unwrap_err();
        assert!(
            matches!(number, OverlayError::NotAString { .. }),
            "{number}"
        );
        let folded = format!("value: >-\n          {DIGEST}");
        let block = overlay("\"8\"", DIGEST).replace(&format!("value: {DIGEST}"), &folded);
        let err = Overlay::parse(block).unwrap_err();
        let located = matches!(
            err,
            OverlayError::NotLocated {
                var: MODEL_SHA256,
                ..
            }
        );
        assert!(located, "{err}");
    }

    #[test]
    fn scalars_end_at_their_quote_or_comment() {
        let plain = scalar(" abc  # note", 10).unwrap();
        assert_eq!((plain.value.as_str(), plain.span), ("abc", 11..14));
        let single = scalar(" 'it''s' ", 0).unwrap();
        assert_eq!((single.value.as_str(), single.span), ("it's", 1..8));
        assert!(scalar(" \"a\\\"b\"", 0).is_none());
        assert!(scalar(" \"a\" b", 0).is_none());
        assert!(scalar(" |-", 0).is_none());
    }

    proptest::proptest! {
        /// Whatever the version, digest and comments, the text changes at the values alone.
        #[test]
        fn edits_change_the_values_alone(
            version in "[0-9a-z][0-9a-z._-]{0,8}",
            digest in "[0-9a-f]{64}",
            comment in "[ -~]{0,40}",
        ) {
            let text = overlay("\"8\"  # pinned", &format!("\"{DIGEST}\""))
                .replace("patches:\n", &format!("# {comment}\npatches:\n"));
            let edited = Overlay::parse(text.clone()).unwrap().edit(&version, Some(&digest)).unwrap();
            let expected = text
                .replace("value: \"8\"  #", &format!("value: \"{version}\"  #"))
                .replace(DIGEST, &digest);
            proptest::prop_assert_eq!(edited.text(), expected);
        }
    }

    #[test]
    fn diff_names_the_changed_lines() {
        let diff = diff("k.yaml", "a\nb\nc\n", "a\nB\nc\n");
        assert_eq!(diff, "--- a/k.yaml\n+++ b/k.yaml\n@@ -2 +2 @@\n-b\n+B\n");
    }
}
